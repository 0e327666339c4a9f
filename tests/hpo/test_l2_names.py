"""Two L2 values that print alike (``l2=<:g>`` names a grid point and its trial folder) are refused
in one line instead of silently sharing one grid point (ray#17894)."""

from __future__ import annotations

import pytest

from hpo.record import Attempt, Replicate
from hpo.study_config import grid_configurations, study_config
from lgeseg.errors import ConfigError


@pytest.mark.parametrize(
    "l2",
    [[5e-4, 5.0000001e-4], [0.1, 0.1000000001, 0.2], [1e-5, 3e-3, 1.0000004e-5], [1.0, 0.99999999]],
)
def test_l2_values_that_print_alike_are_refused(l2, one_line_error):
    with pytest.raises(ConfigError, match=r"config key 'grid\.l2': .* are both named l2=\S+ .*share one grid point"):
        study_config({"grid": {"l2": l2}})
    text = "[" + ", ".join(repr(v) for v in l2) + "]"
    assert "grid.l2" in one_line_error(["grid", "--set", f"grid.l2={text}"])


@pytest.mark.parametrize("l2", [[5e-4, 5.00001e-4], [1e-3, 1.1e-3, 1e-4], [0.123456, 0.123457]])
def test_l2_values_distinct_in_6_digits_give_distinct_grid_points(l2):
    config = study_config({"grid": {"l2": l2}})
    attempts = [Attempt(c, Replicate(0)) for c in grid_configurations(config)]
    assert len({a.point for a in attempts}) == len({a.name for a in attempts}) == len(l2)
