from __future__ import annotations

from kron_testing.dashboards import alert_signals, rule_exprs, substitute


def test_alert_signals_drop_thresholds_and_split_set_operators() -> None:
    assert alert_signals("(\n  a / b\n) > 0.2\nand\nsum(increase(c[5m])) >= 3\n") == ["(\n  a / b\n)", "sum(increase(c[5m]))"]
    assert alert_signals('sum by (q) (x{s="and"}) > 0 unless on (q) sum by (q) (y) > 1e3') == [
        'sum by (q) (x{s="and"})',
        "sum by (q) (y)",
    ]
    # Names that contain an operator word, and comparisons inside functions, stay as they are.
    assert alert_signals("sum(rate(brand_total[5m]))") == ["sum(rate(brand_total[5m]))"]
    assert alert_signals("count(x > 2)") == ["count(x > 2)"]


def test_every_shipped_alert_has_signals_without_a_threshold() -> None:
    for name, expr in rule_exprs():
        for signal in alert_signals(expr):
            assert signal and alert_signals(signal) == [signal], (name, signal)


def test_substitute_replaces_longer_variables_first() -> None:
    assert substitute("rate(x[$__rate_interval]) / $__range", {"$__rate_interval": "5m", "$__range": "1h"}) == (
        "rate(x[5m]) / 1h"
    )
