from __future__ import annotations

from kron.cli.main import build_parser


def test_up_arguments_have_documented_defaults() -> None:
    args = build_parser().parse_args(["up"])
    assert (args.port, args.temporal_port, args.ui_port) == (8080, 7233, 8233)
    assert (args.worker_metrics_port, args.scheduler_metrics_port) == (9464, 9465)
    assert args.launch is None and not args.demo and args.data_dir is None
