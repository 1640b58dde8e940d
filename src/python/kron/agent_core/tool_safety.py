"""How safe it is to run a tool call again when its first run may or may not have happened.

Composio slugs read `<TOOLKIT>_<VERB>_<OBJECT>` (GITHUB_CREATE_ISSUE, GMAIL_FETCH_EMAILS), so the
verb gives a sensible default: reading verbs are read-only, "set"-like verbs idempotent, everything
else unsafe. A deployment overrides any tool or toolkit (KRON_TOOL_SAFETY, JSON).
"""

from __future__ import annotations

from collections.abc import Mapping

from kron.contracts.models import ToolSafety

READ_ONLY_VERBS = frozenset({
    "GET", "LIST", "FETCH", "SEARCH", "READ", "FIND", "RETRIEVE", "DESCRIBE", "QUERY", "VIEW",
    "CHECK", "COUNT", "LOOKUP", "DOWNLOAD", "EXPORT", "PREVIEW",
})
IDEMPOTENT_VERBS = frozenset({"SET", "UPSERT", "REPLACE", "ENABLE", "DISABLE", "MARK", "STAR", "UNSTAR"})
# kron's own offline demo tools compute and change nothing.
BUILT_IN_OVERRIDES: Mapping[str, ToolSafety] = {"DEMO": ToolSafety.READ_ONLY}


class ToolSafetyPolicy:
    def __init__(self, overrides: Mapping[str, ToolSafety] | None = None) -> None:
        # Longest key first, so a tool's own entry beats its toolkit's.
        merged = {**BUILT_IN_OVERRIDES, **{k.upper(): v for k, v in (overrides or {}).items()}}
        self._overrides = sorted(merged.items(), key=lambda item: -len(item[0]))

    def override(self, tool_slug: str) -> ToolSafety | None:
        """The deployment's (or a built-in) entry for the tool or its toolkit, if any."""
        slug = tool_slug.upper()
        for key, safety in self._overrides:
            if slug == key or slug.startswith(key + "_"):
                return safety
        return None

    def classify(self, tool_slug: str) -> ToolSafety:
        overridden = self.override(tool_slug)
        if overridden is not None:
            return overridden
        slug = tool_slug.upper()
        words = slug.split("_")
        # The verb is the first word after the toolkit; scan a few in case the toolkit has two words.
        for word in words[1:4]:
            if word in READ_ONLY_VERBS:
                return ToolSafety.READ_ONLY
            if word in IDEMPOTENT_VERBS:
                return ToolSafety.IDEMPOTENT
        return ToolSafety.UNSAFE
