from __future__ import annotations

import pytest
from pydantic import ValidationError

from kron.common.user_limits import ROLE_ADMIN, ROLE_USER, LimitOverride, LimitOverrides, UserLimits

DEFAULTS = UserLimits(dispatch_rate_per_second=1.0, dispatch_burst=10, max_streams=10, fairness_weight=1.0)


def test_user_overrides_beat_role_overrides_which_beat_defaults() -> None:
    overrides = LimitOverrides.model_validate({
        "roles": {"user": {"max_streams": 5}, "admin": {"dispatch_burst": 100, "max_streams": 50}},
        "users": {"root": {"max_streams": 2}, "bot": {"fairness_weight": 0.25}},
    })
    assert overrides.resolve(DEFAULTS, "someone", {ROLE_USER}).max_streams == 5
    admin = overrides.resolve(DEFAULTS, "ada", {ROLE_USER, ROLE_ADMIN})
    assert (admin.dispatch_burst, admin.max_streams, admin.dispatch_rate_per_second) == (100, 50, 1.0)
    root = overrides.resolve(DEFAULTS, "root", {ROLE_USER, ROLE_ADMIN})
    assert (root.dispatch_burst, root.max_streams) == (100, 2)
    assert overrides.resolve(DEFAULTS, "bot", {ROLE_USER}).fairness_weight == 0.25
    assert LimitOverrides().resolve(DEFAULTS, "anyone", {ROLE_USER}) == DEFAULTS


@pytest.mark.parametrize("bad", [{"max_streams": 0}, {"fairness_weight": 0}, {"dispatch_rate": 1}])
def test_overrides_are_validated_strictly(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        LimitOverride.model_validate(bad)
