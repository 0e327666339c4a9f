"""The one home of number formatting and NaN coercion (lgeseg.tables), against hand-written values."""

from __future__ import annotations

import math

from lgeseg.tables import MISSING, as_nan, as_none, fmt, setting


def test_setting_writes_hyperparameters_as_names_do():
    assert setting(5e-5) == "5e-05" and setting(0.000404388123) == "0.000404388" and setting(0.0083113, 4) == "0.008311"
    assert setting(16) == "16" and setting("dice") == "dice" and setting(None) == MISSING == setting(math.nan)


def test_nan_coercion_round_trips_missing_values():
    assert math.isnan(as_nan(None)) and as_nan(0.5) == 0.5 and as_nan(1) == 1.0
    assert as_none(math.nan) is None and as_none(None) is None and as_none("x") is None and as_none("0.25") == 0.25
    assert as_none(as_nan(None)) is None
    assert fmt(as_nan(None)) == MISSING and fmt(0.12345) == "0.1235"
