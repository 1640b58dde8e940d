"""`dep-rules`: a linter that enforces the visibility backend's dependency rules in `pants lint`.

Pants 2.17's visibility backend checks `__dependencies_rules__` / `__dependents_rules__` whenever a
target's dependencies are resolved, which `test`, `check` and `package` do but `lint` (ruff) does
not. This linter resolves the dependencies of every linted target, so a violation (say, gateway code
importing `kron.worker`) fails `pants lint` too, listing each offending edge.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pants.core.goals.lint import LintResult, LintTargetsRequest
from pants.core.util_rules.partitions import PartitionerType
from pants.engine.addresses import Addresses
from pants.engine.internals.dep_rules import DependencyRuleActionDeniedError
from pants.engine.rules import Get, MultiGet, collect_rules, rule
from pants.engine.target import Dependencies, DependenciesRequest, FieldSet
from pants.option.option_types import SkipOption
from pants.option.subsystem import Subsystem
from pants.util.logging import LogLevel
from pants.util.strutil import pluralize


class DepRulesSubsystem(Subsystem):
    options_scope = "dep-rules"
    name = "dep-rules"
    help = "Fail `lint` on dependency-rule (visibility) violations."

    skip = SkipOption("lint")


@dataclass(frozen=True)
class DepRulesFieldSet(FieldSet):
    required_fields = (Dependencies,)

    dependencies: Dependencies


class DepRulesRequest(LintTargetsRequest):
    field_set_type = DepRulesFieldSet
    tool_subsystem = DepRulesSubsystem
    partitioner_type = PartitionerType.DEFAULT_SINGLE_PARTITION


@dataclass(frozen=True)
class DepRulesOutcome:
    violation: str | None


@rule(desc="Check dependency rules", level=LogLevel.DEBUG)
async def check_dependency_rules(field_set: DepRulesFieldSet) -> DepRulesOutcome:
    try:
        # Resolving dependencies runs the visibility backend's validation, which raises on a
        # violation.
        await Get(Addresses, DependenciesRequest(field_set.dependencies))
    except DependencyRuleActionDeniedError as e:
        return DepRulesOutcome(violation=str(e))
    return DepRulesOutcome(violation=None)


@rule(desc="Lint dependency rules", level=LogLevel.DEBUG)
async def dep_rules_lint(request: DepRulesRequest.Batch[DepRulesFieldSet, Any]) -> LintResult:
    outcomes = await MultiGet(
        Get(DepRulesOutcome, DepRulesFieldSet, field_set) for field_set in request.elements
    )
    violations = sorted({o.violation for o in outcomes if o.violation is not None})
    if violations:
        stdout = "\n\n".join(violations) + (
            f"\n\nDependencyRuleActionDeniedError: {pluralize(len(violations), 'target')} with "
            "dependency violations (see __dependencies_rules__ / __dependents_rules__, "
            "build-support/pants-plugins/kron_macros.py).\n"
        )
    else:
        stdout = f"{pluralize(len(request.elements), 'target')} follow the dependency rules.\n"
    return LintResult(
        exit_code=1 if violations else 0,
        stdout=stdout,
        stderr="",
        linter_name=DepRulesRequest.tool_name,
        partition_description=None,
    )


def rules() -> Iterable[Any]:
    return (*collect_rules(), *DepRulesRequest.rules())
