"""How the CLI shows API answers to a person (`--json` prints them as they came instead)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "max_iterations", "budget_exceeded"})


def marks(encoding: str | None) -> tuple[str, str]:
    """(ok, failed) marks; plain ASCII where the terminal cannot show the others."""
    try:
        "✓✗".encode(encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return "+", "x"
    return "✓", "✗"


def step_line(step: Mapping[str, Any], ok_mark: str = "✓", fail_mark: str = "✗") -> str:
    kind = str(step.get("kind", "?"))
    mark = ok_mark if step.get("ok") else fail_mark
    if step.get("outcome_unknown"):
        mark = "?"
    line = f"  {mark} {kind:<5} {step.get('name', '')!s:<28} turn {step.get('turn', '?')!s:<3} " \
           f"{float(step.get('duration_seconds') or 0):6.2f} s"
    if kind == "model" and any(step.get(f) for f in _TOKEN_FIELDS):
        line += f"  {_tokens(step)}"
    if step.get("outcome_unknown"):
        line += "  outcome unknown (the worker died while it ran)"
    if step.get("error"):
        line += f"  error: {step['error']}"
    return line


_TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def _tokens(counts: Mapping[str, Any]) -> str:
    """"N tokens (in, out, cache read, cache write)": in is the uncached input, as the API counts."""
    inp, out, read, write = (int(counts.get(f) or 0) for f in _TOKEN_FIELDS)
    text = f"{inp + out + read + write:,} tokens (in {inp:,}, out {out:,}"
    if read or write:
        text += f", cache read {read:,}, cache write {write:,}"
    return text + ")"


def usage_line(usage: Mapping[str, Any] | None) -> str:
    usage = usage or {}
    return (f"{_tokens(usage)} · {usage.get('model_calls', 0)} model calls"
            f" · {usage.get('tool_calls', 0)} tool calls · {cost_text(usage.get('cost_usd', 0.0))}")


def usd(amount: Any) -> str:
    return f"${float(amount):.4f}"


def cost_text(cost_usd: Any) -> str:
    """A run's cost; None means some call had no price (never shown as $0)."""
    return "cost unknown (a model without a price)" if cost_usd is None else usd(cost_usd)


def paused_line(task_id: Any, paused: Mapping[str, Any]) -> str:
    return (f"paused    {paused.get('budget')} budget reached: {usd(paused.get('spent_usd', 0))} spent of "
            f"{usd(paused.get('limit_usd', 0))}  (kron budget {task_id} USD; ends as budget_exceeded "
            f"after {paused.get('timeout_seconds')} s)")


def usage_report(report: Mapping[str, Any]) -> str:
    lines = [f"month     {report.get('month')}",
             f"spent     {usd(report.get('total_usd', 0))} on {report.get('model_calls', 0)} model calls"]
    if report.get("unpriced_calls"):
        lines.append(f"unpriced  {report['unpriced_calls']} calls of models without a price (not in the total)")
    for title, key in (("by model", "by_model"), ("by schedule", "by_schedule")):
        spend = report.get(key) or {}
        if spend:
            lines.append(title)
            lines += [f"  {name:<32} {usd(amount)}" for name, amount in sorted(spend.items())]
    return "\n".join(lines)


def when(value: Any) -> str:
    """An API timestamp, shortened to local time to the second."""
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def short(text: Any, limit: int = 60) -> str:
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def tasks_table(page: Mapping[str, Any]) -> str:
    tasks = page.get("tasks") or []
    if not tasks:
        return "no tasks"
    rows = [
        [str(t.get("task_id", "")), str(t.get("execution_status", "")), when(t.get("created_at")),
         ",".join(t.get("toolkits") or []) or "-", short(t.get("goal"), 50)]
        for t in tasks
    ]
    out = table(["TASK", "STATE", "CREATED", "TOOLKITS", "GOAL"], rows)
    if page.get("next_cursor"):
        out += f"\n(more: --cursor {page['next_cursor']})"
    return out


def task_detail(task: Mapping[str, Any], ok_mark: str = "✓", fail_mark: str = "✗") -> str:
    lines = [
        f"task      {task.get('task_id')}",
        f"status    {task.get('status')}" + ("" if task.get("live", True) else "  (no worker answered: "
                                                "what Temporal alone knows)"),
        f"state     {task.get('execution_status')}",
        f"created   {when(task.get('created_at'))}",
    ]
    if task.get("closed_at"):
        lines.append(f"closed    {when(task.get('closed_at'))}")
    if task.get("goal"):
        lines.append(f"goal      {short(task.get('goal'), 200)}")
    if task.get("toolkits"):
        lines.append(f"toolkits  {', '.join(task['toolkits'])}")
    if task.get("model"):
        lines.append(f"model     {task['model']}")
    agent = task.get("agent")
    if isinstance(agent, Mapping):
        lines.append(f"agent     {agent.get('name')} v{agent.get('version')}" + (" (shared)" if agent.get("shared") else ""))
    lines.append(f"turns     {task.get('turns', 0)}")
    lines.append(f"usage     {usage_line(task.get('usage'))}")
    steps = task.get("steps") or []
    if steps:
        lines.append("steps")
        lines += [step_line(s, ok_mark, fail_mark) for s in steps]
    lines += waiting_lines(task)
    if task.get("error"):
        lines.append(f"error     {error_text(task['error'])}")
    if task.get("output"):
        lines.append("output" + ("  (truncated: the model hit its token limit)" if task.get("truncated") else ""))
        lines += ["  " + line for line in str(task["output"]).splitlines()]
    return "\n".join(lines)


def waiting_lines(task: Mapping[str, Any]) -> list[str]:
    task_id = task.get("task_id")
    lines: list[str] = []
    if task.get("paused"):
        lines.append(paused_line(task_id, task["paused"]))
    pending = task.get("pending_approval")
    if pending:
        calls = ", ".join(str(c.get("name")) for c in pending.get("calls") or [])
        lines.append(f"waiting   for approval of: {calls}  (kron approve {task_id} | kron deny {task_id})")
    for unknown in task.get("pending_unknown") or []:
        name = (unknown.get("call") or {}).get("name")
        lines.append(f"waiting   {name}: outcome unknown after a crash  "
                     f"(kron resolve {task_id} retry|skip|abort)")
    return lines


def error_text(error: Any) -> str:
    if isinstance(error, Mapping):
        return f"{error.get('code', 'error')}: {error.get('message', '')}"
    return str(error)


def schedules_table(page: Mapping[str, Any]) -> str:
    schedules = page.get("schedules") or []
    if not schedules:
        return "no schedules"
    rows = [
        [str(s.get("name", "")), "suspended" if s.get("suspended") else "active", str(s.get("source", "")),
         when((s.get("next_run_times") or [None])[0]), when(s.get("last_run_at"))]
        for s in schedules
    ]
    out = table(["NAME", "STATE", "SOURCE", "NEXT RUN", "LAST RUN"], rows)
    if page.get("next_cursor"):
        out += f"\n(more: --cursor {page['next_cursor']})"
    return out


def schedule_detail(schedule: Mapping[str, Any]) -> str:
    timing = schedule.get("timing") or {}
    run = schedule.get("run") or {}
    if timing.get("cron"):
        spec = f"cron {' | '.join(timing['cron'])} ({timing.get('timezone', 'UTC')})"
    else:
        spec = f"every {timing.get('interval_seconds')} s"
    if timing.get("jitter_seconds"):
        spec += f", jitter up to {timing['jitter_seconds']} s"
    lines = [
        f"schedule     {schedule.get('name')}  ({schedule.get('schedule_id')}, source {schedule.get('source')})",
        f"state        {'suspended' if schedule.get('suspend') else 'active'}",
        f"timing       {spec}",
        f"concurrency  {schedule.get('concurrency_policy')}",
        f"goal         {short(run.get('goal'), 200)}",
    ]
    if run.get("toolkits"):
        lines.append(f"toolkits     {', '.join(run['toolkits'])}")
    next_runs = schedule.get("next_run_times") or []
    lines.append(f"next runs    {', '.join(when(t) for t in next_runs[:3]) or '-'}")
    lines.append(f"last run     {when(schedule.get('last_run_at'))}")
    lines.append(f"fires        {schedule.get('fires_total', 0)} "
                 f"(skipped for overlap: {schedule.get('skipped_overlap_total', 0)})")
    if schedule.get("running_fire_ids"):
        lines.append(f"running      {', '.join(schedule['running_fire_ids'])}")
    return "\n".join(lines)


def runs_table(page: Mapping[str, Any]) -> str:
    runs = page.get("runs") or []
    if not runs:
        return f"no runs yet for {page.get('name')}"
    rows = [
        [when(r.get("scheduled_at") or r.get("fired_at")), str(r.get("trigger", "")), str(r.get("dispatch", "")),
         str(r.get("outcome") or ("running" if r.get("dispatch") == "started" else "-")),
         str(r.get("run_status") or "-"), str(r.get("task_id") or "-"), short(r.get("error"), 40) or ""]
        for r in runs
    ]
    out = table(["FIRED", "TRIGGER", "DISPATCH", "OUTCOME", "RUN STATUS", "TASK", "ERROR"], rows)
    if page.get("skipped_total"):
        out += f"\n{page['skipped_total']} fires skipped for overlap in total"
    return out


def as_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)
