"""A key given twice in a config YAML is one ``error:`` line naming the file, the line and the key, at any
depth (PyYAML keeps the last one silently: yaml/pyyaml#165)."""

from __future__ import annotations

import pytest

from lgeseg.config import load_yaml, safe_load
from lgeseg.errors import ConfigError

CASES = {
    # an old grid: left above a new one
    "section": ("grid:\n  l2: [1.0e-3]\nname: x\ngrid:\n  l2: [5.0e-4]\n", 4, "grid", 1),
    "nested": ("train:\n  epochs: 3\n  batch_size: 8\n  epochs: 4\n", 4, "epochs", 2),
    "deeper": ("train:\n  augment:\n    translate: 5\n    translate: 10\n", 4, "translate", 3),
    "in a list item": (
        "retune:\n  adjustments:\n    - {learning_rate: 1.0e-3, learning_rate: 3.0e-3}\n",
        3,
        "learning_rate",
        3,
    ),
    "number keys": ("map:\n  1: a\n  1.0: b\n", 3, 1.0, 2),  # 1 and 1.0 are one key
}


@pytest.mark.parametrize("case", CASES)
def test_a_duplicate_key_is_one_error_naming_file_line_and_key(tmp_path, case):
    text, line, key, first = CASES[case]
    path = tmp_path / "study.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_yaml(path)
    message = str(caught.value)
    assert message == f"{path}: invalid YAML at line {line} (duplicate key {key!r}, also at line {first}; delete one)"


@pytest.mark.parametrize("command", ["grid", "search", "train"])
def test_the_commands_refuse_it_in_one_line(tmp_path, one_line_error, command):
    path = tmp_path / "study.yaml"
    path.write_text("name: x\ntrain:\n  epochs: 3\n  epochs: 4\n")
    line = one_line_error([command, "--config", str(path)])
    assert line == f"error: {path}: invalid YAML at line 4 (duplicate key 'epochs', also at line 3; delete one)"


def test_set_overrides_refuse_it_too(one_line_error):
    line = one_line_error(["grid", "--set", "train={epochs: 1, epochs: 2}"])
    assert "duplicate key 'epochs'" in line and "--set train" in line


def test_unique_keys_and_merge_overrides_still_load():
    assert safe_load("a: 1\nb: {a: 2}\n") == {"a": 1, "b": {"a": 2}}  # one key in two mappings is fine
    text = "base: &b {epochs: 1, batch_size: 4}\ntrain:\n  <<: *b\n  epochs: 2\n"
    assert safe_load(text)["train"] == {"epochs": 2, "batch_size": 4}  # a merged key may be overridden
