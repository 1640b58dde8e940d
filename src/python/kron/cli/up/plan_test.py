"""`kron up`'s decisions, without starting anything (tests/integration/cli runs it for real)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from kron.cli.api import CliError
from kron.cli.up.plan import PEX_PATHS, decide_mode, dist_dir, launch_mode, plan
from kron.cli.up.ports import Ports

PORTS = Ports(gateway=18080, temporal=17233, ui=18233, worker_metrics=19464, scheduler_metrics=19465,
              temporal_metrics=19466)


def test_without_both_keys_it_is_the_offline_demo_and_says_which_is_missing() -> None:
    assert decide_mode({}, False).demo
    assert decide_mode({}, False).reason == "ANTHROPIC_API_KEY and COMPOSIO_API_KEY are not set"
    assert decide_mode({"ANTHROPIC_API_KEY": "sk"}, False).reason == "COMPOSIO_API_KEY is not set"
    both = {"ANTHROPIC_API_KEY": "sk", "COMPOSIO_API_KEY": "ck"}
    assert not decide_mode(both, False).demo
    assert decide_mode(both, True).demo


def _plan(launch: str, environ: dict[str, str], demo: bool = True) -> dict[str, tuple[list[str], dict[str, str]]]:
    services = plan(ports=PORTS, db_file=Path("/d/temporal.sqlite"), temporal_bin="/bin/temporal", launch=launch,
                    dist=Path("/dist"), demo=demo, drain_seconds=7, environ=environ, python="/py")
    return {s.name: (s.argv, s.env) for s in services}


def test_plan_from_sources_runs_python_m_with_this_sys_path() -> None:
    services = _plan("source", {"PATH": "/usr/bin", "PEX": "/x.pex", "PEX_ROOT": "/pexroot", "PYTHONPATH": "/old"})
    assert list(services) == ["temporal", "worker", "scheduler", "gateway"]
    assert services["worker"][0] == ["/py", "-u", "-m", "kron.worker.main"]
    assert services["gateway"][0] == ["/py", "-u", "-m", "kron.gateway.main"]
    env = services["worker"][1]
    assert env["PYTHONPATH"].split(":") == [p for p in sys.path if p]
    assert "PEX" not in env and env["PEX_ROOT"] == "/pexroot" and env["PATH"] == "/usr/bin"


def test_plan_from_pexes_runs_the_dist_pexes() -> None:
    services = _plan("pex", {"PYTHONPATH": "/old"})
    for name in ("worker", "scheduler", "gateway"):
        assert services[name][0] == ["/py", f"/dist/{PEX_PATHS[name]}"]
        assert "PYTHONPATH" not in services[name][1]


def test_plan_wires_ports_modes_and_temporal() -> None:
    services = _plan("source", {"ANTHROPIC_API_KEY": "sk", "COMPOSIO_API_KEY": "ck", "KRON_LOG_LEVEL": "DEBUG"})
    temporal = services["temporal"][0]
    assert temporal[:3] == ["/bin/temporal", "server", "start-dev"]
    assert " ".join(temporal).count("--port 17233") == 1 and "--ui-port" in temporal
    assert "/d/temporal.sqlite" in temporal and "KronUserId=Keyword" in temporal
    assert "frontend.enableServerVersionCheck=false" in temporal
    worker, scheduler, gateway = (services[n][1] for n in ("worker", "scheduler", "gateway"))
    for env in (worker, scheduler, gateway):
        assert env["KRON_TEMPORAL_ADDRESS"] == "127.0.0.1:17233"
        assert env["KRON_DEMO_MODE"] == "true" and env["KRON_DEV_MODE"] == "true"
        assert "ANTHROPIC_API_KEY" not in env and "COMPOSIO_API_KEY" not in env  # demo: keys kept out
        assert env["KRON_LOG_LEVEL"] == "DEBUG"
    assert (worker["KRON_METRICS_PORT"], worker["KRON_DRAIN_SECONDS"]) == ("19464", "7")
    assert scheduler["KRON_METRICS_PORT"] == "19465"
    assert (gateway["KRON_HOST"], gateway["KRON_PORT"]) == ("127.0.0.1", "18080")

    live = _plan("source", {"ANTHROPIC_API_KEY": "sk", "COMPOSIO_API_KEY": "ck"}, demo=False)
    assert live["worker"][1]["KRON_DEMO_MODE"] == "false" and live["worker"][1]["ANTHROPIC_API_KEY"] == "sk"

    headless = plan(ports=Ports(1, 2, 0, 3, 4, 5), db_file=Path("/f"), temporal_bin="t", launch="source",
                    dist=Path("/"), demo=True, drain_seconds=1, environ={})
    assert "--headless" in headless[0].argv and "--ui-port" not in headless[0].argv


def _dynamic_config(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == "--dynamic-config-value"]


def test_plan_passes_temporal_dynamic_config_with_local_defaults() -> None:
    common = dict(ports=PORTS, db_file=Path("/f"), temporal_bin="t", launch="source", dist=Path("/"), demo=True,
                  drain_seconds=1, environ={})
    default = _dynamic_config(plan(**common)[0].argv)  # type: ignore[arg-type]
    assert 'matching.backlogMetricsEmitInterval="5s"' in default
    assert "history.transferProcessorMaxPollRPS=1000" in default
    given = ['matching.backlogMetricsEmitInterval="1s"', "limit.maxIDLength=255"]
    chosen = _dynamic_config(plan(**common, dynamic_config=given)[0].argv)  # type: ignore[arg-type]
    assert chosen == [
        "frontend.enableServerVersionCheck=false", "history.transferProcessorMaxPollRPS=1000",
        "matching.enableFairness=true", "matching.numTaskqueueReadPartitions=1",
        "matching.numTaskqueueWritePartitions=1", *given,
    ]
    # Fairness can be switched off like any default.
    fifo = _dynamic_config(plan(**common, dynamic_config=["matching.enableFairness=false"])[0].argv)  # type: ignore[arg-type]
    assert "matching.enableFairness=true" not in fifo and "matching.enableFairness=false" in fifo


def test_launch_mode_and_dist_dir(tmp_path: Path) -> None:
    pex = tmp_path / "dist" / "src.python.kron.cli" / "kron.pex"
    pex.parent.mkdir(parents=True)
    pex.write_text("")
    assert launch_mode(None, {}) == "source"
    assert launch_mode(None, {"PEX": str(pex)}) == "pex"
    assert launch_mode(None, {"KRON_DIST_DIR": "/dist"}) == "pex"
    assert launch_mode("source", {"KRON_DIST_DIR": "/dist"}) == "source"
    assert launch_mode(None, {"KRON_UP_LAUNCH": "source", "PEX": str(pex)}) == "source"
    with pytest.raises(CliError, match="KRON_UP_LAUNCH"):
        launch_mode(None, {"KRON_UP_LAUNCH": "docker"})
    assert dist_dir(None, {"PEX": str(pex)}) == (tmp_path / "dist").resolve()
    assert dist_dir("/x", {"KRON_DIST_DIR": "/y"}) == Path("/x")
    assert dist_dir(None, {"KRON_DIST_DIR": "/y"}) == Path("/y")
