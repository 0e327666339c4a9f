"""Run and study configs: defaults = the study protocol, and every bad value is one line naming its key."""

from __future__ import annotations

import math

import pytest
from conftest import tiny_train_args

from hpo.record import Configuration, Replicate
from hpo.study_config import (
    DEFAULT_CONFIG,
    STUDY_DEFAULTS,
    grid_configurations,
    load_study_config,
    replicates,
    run_config_of,
    space,
    study_config,
)
from lgeseg.config import RUN_DEFAULTS, config_hash, load_yaml, merge, run_config, set_dotted
from lgeseg.errors import ConfigError

TINY = tiny_train_args(epochs=1)
#: The study protocol's network: MATLAB's U-Net of width 64 and depth 4, unpadded, zero-centred per channel.
PROTOCOL_MODEL = {
    "architecture": "matlab-unet",
    "width": 64,
    "depth": 4,
    "pad": False,
    "normalization": "zerocenter",
    "normalization_dimension": "channel",
}


@pytest.fixture
def no_training(monkeypatch):
    """Make any attempt to train fail fast: config errors must stop the CLI before run()."""

    def refuse(*args, **kwargs):
        raise AssertionError("run() reached although the config is invalid")

    monkeypatch.setattr("lgeseg.run.run", refuse)


def cli_error(one_line_error, *args: str, data=None, out=None) -> str:
    """The one ``error:`` line of ``train`` on the tiny data set with ``args``."""
    return one_line_error(
        ["train", *(["--data", str(data)] if data else []), *TINY, *(["--out", str(out)] if out else []), *args]
    )


# ------------------------------------------------------------------------------------- the protocol


def test_paper_yaml_is_the_study_protocol():
    study = load_study_config(DEFAULT_CONFIG)
    assert DEFAULT_CONFIG.name == "paper.yaml"
    assert study["train"]["epochs"] == 180
    assert study["train"]["batch_size"] == 16
    assert study["train"]["learning_rate"] == 1e-4
    assert study["train"]["l2_mode"] == "coupled"
    assert study["train"]["select"] == "final"
    assert study["train"]["augment"] == {"reflect": True, "translate": 10}
    assert study["grid"]["l2"] == [5e-3, 5e-4, 5e-5]
    assert study["model"] == {**study["model"], **PROTOCOL_MODEL}
    assert study["train"]["shuffle"] == "once" and study["train"]["lr_schedule"] == "none"
    assert study["split"] == {
        "train": 0.6,
        "val": 0.2,
        "test": 0.2,
        "seed": 0,
        "folds": None,
        "fold": 0,
        "stratify": None,
    }
    assert study["retune"]["check_fraction"] == 0.1
    assert study["retune"]["target_accuracy"] == 0.9
    assert study["data"] is None


def test_paper_yaml_equals_the_built_in_defaults():
    """paper.yaml only spells out the defaults: a run from either is the same run."""
    paper = load_study_config(DEFAULT_CONFIG)
    defaults = study_config({"name": paper["name"]})
    for section in ("split", "model", "train", "grid", "retune", "data", "seeds"):
        assert paper[section] == defaults[section], section
    point = run_config_of(paper, {"train.l2": 5e-4}, Replicate(0))
    assert config_hash(point) == config_hash(run_config({"train": {"l2": 5e-4}}))


def test_quick_yaml_keeps_the_protocols_shape():
    """quick.yaml may change width, epochs, learning rate, normalisation, schedule, selection, speed and the rule's
    target, but not what the study is about."""
    paper = load_study_config(DEFAULT_CONFIG)
    quick = load_study_config(DEFAULT_CONFIG.parent / "quick.yaml")
    assert quick["grid"] == paper["grid"] and quick["split"] == paper["split"] and quick["seeds"] == paper["seeds"]
    for key in ("batch_size", "l2_mode", "augment", "shuffle"):
        assert quick["train"][key] == paper["train"][key], key
    assert quick["model"]["depth"] == paper["model"]["depth"]
    assert quick["retune"]["target_accuracy"] > 0 and quick["retune"]["max_reruns"] > 0  # the rule is on


def test_run_defaults_are_matlab_r2020b():
    t = RUN_DEFAULTS["train"]
    assert (t["epochs"], t["batch_size"], t["learning_rate"], t["l2"]) == (180, 16, 1e-4, 5e-4)
    assert t["l2_mode"] == "coupled" and t["select"] == "final" and t["loss"] == "cross-entropy"
    assert t["augment"] == {"reflect": True, "translate": 10}
    # imageInputLayer: Normalization 'zerocenter', NormalizationDimension 'auto' (= channel at training time)
    assert RUN_DEFAULTS["model"] == {**RUN_DEFAULTS["model"], **PROTOCOL_MODEL}
    # trainingOptions: Shuffle 'once', LearnRateSchedule 'none', LearnRateDropFactor 0.1, LearnRateDropPeriod 10
    assert (t["shuffle"], t["lr_schedule"], t["lr_drop_factor"], t["lr_drop_period"]) == ("once", "none", 0.1, 10)
    assert "l2" not in STUDY_DEFAULTS["train"]  # L2 comes from the grid only
    # validation after every epoch unless a config asks for MATLAB's ValidationFrequency (issue 24)
    assert (t["validation_frequency"], t["validation_epochs"]) == (0, [])


def test_run_config_of_sets_the_configuration_and_the_replicate():
    study = load_study_config(DEFAULT_CONFIG)
    config = run_config_of(study, {"train.l2": 5e-5}, Replicate(3))
    assert config["train"]["l2"] == 5e-5 and config["seed"] == 3
    adjusted = run_config_of(study, {"train.l2": 5e-5}, Replicate(3), {"learning_rate": 1e-3})
    assert adjusted["train"]["learning_rate"] == 1e-3 and adjusted["train"]["l2"] == 5e-5


def test_a_grid_is_a_categorical_space_times_its_seeds():
    study = study_config(
        {
            "seeds": [0, 1],
            "grid": {
                "l2": [1e-3],
                "architecture": ["matlab-unet", "monai-segresnet"],
                "loss": ["cross-entropy", "dice"],
            },
        }
    )
    assert [c.values for c in grid_configurations(study)] == [
        {"train.l2": 1e-3, "model.architecture": a, "train.loss": loss}
        for a in ("matlab-unet", "monai-segresnet")
        for loss in ("cross-entropy", "dice")
    ]
    assert {k: list(d.choices) for k, d in space(study).items()} == {
        "train.l2": [1e-3],
        "model.architecture": ["matlab-unet", "monai-segresnet"],
        "train.loss": ["cross-entropy", "dice"],
    }
    assert replicates(study) == [Replicate(0), Replicate(1)]
    config = run_config_of(study, grid_configurations(study)[3].values, Replicate(1))
    assert config["model"]["architecture"] == "monai-segresnet" and config["train"]["loss"] == "dice"
    assert config["seed"] == 1
    assert study["model"]["architecture"] == "matlab-unet"  # the study config is not changed
    plain = grid_configurations(study_config({}))  # the paper's grid: L2 alone
    assert len(plain) == 3 and plain[0] == Configuration((("train.l2", 5e-3),))


@pytest.mark.parametrize(
    ("grid", "fragment"),
    [
        ({"architecture": ["monai-vnet"]}, "'grid.architecture' must be a list of matlab-unet"),
        ({"architecture": ["monai-unet", "monai-unet"]}, "'grid.architecture' has repeated values"),
        ({"loss": ["tversky"]}, "'grid.loss' must be a list of cross-entropy"),
        ({"loss": "dice"}, "'grid.loss' must be a list"),
    ],
)
def test_bad_grid_axes_name_the_key(grid, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        study_config({"grid": grid})
    assert "\n" not in str(info.value)


def test_bad_loss_names_the_key():
    with pytest.raises(ConfigError, match="'train.loss' must be one of cross-entropy, dice-ce, dice, focal"):
        run_config({"train": {"loss": "tversky"}})


# ------------------------------------------------------------------------------------ lgeseg.config


def test_merge_rejects_unknown_key_naming_it():
    with pytest.raises(ConfigError, match=r"'train\.lr'"):
        run_config({"train": {"lr": 1e-3}})


@pytest.mark.parametrize(
    "key,value,expected",
    [
        ("epochs", "ten", "integer"),
        ("epochs", 2.5, "integer"),
        ("epochs", True, "integer"),
        ("learning_rate", "fast", "number"),
        ("learning_rate", False, "number"),
        ("l2_mode", 1, "string"),
    ],
)
def test_merge_rejects_wrong_types(key, value, expected):
    with pytest.raises(ConfigError, match=rf"'train\.{key}' must be an? {expected}"):
        run_config({"train": {key: value}})


def test_merge_accepts_int_for_float_and_converts():
    config = run_config({"train": {"learning_rate": 1, "l2": 0}})
    assert isinstance(config["train"]["learning_rate"], float) and config["train"]["l2"] == 0.0


@pytest.mark.parametrize(
    "key,value",
    [
        ("train.l2", -1.0),
        ("train.l2", math.nan),
        ("train.l2", math.inf),
        ("train.learning_rate", 0.0),
        ("train.epochs", 0),
        ("train.batch_size", -4),
        ("model.width", 0),
        ("train.augment.translate", -1),
        ("train.l2_mode", "adamw"),
        ("train.select", "best"),
        ("train.precision", "fp16"),
        ("train.shuffle", "never"),
        ("train.lr_schedule", "cosine"),
        ("train.lr_drop_factor", 1.5),
        ("train.lr_drop_factor", -0.1),
        ("train.lr_drop_period", 0),
        ("model.normalization", "zcore"),
        ("model.normalization_dimension", "pixel"),
    ],
)
def test_run_config_range_checks_name_the_key(key, value):
    values: dict = {}
    set_dotted(values, f"{key}=0")
    node = values
    parts = key.split(".")
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        run_config(values)


def test_split_fractions_must_sum_to_one():
    with pytest.raises(ConfigError, match="sum to 1"):
        run_config({"split": {"train": 0.5, "val": 0.2, "test": 0.2}})


@pytest.mark.parametrize("key,value", [("seed", -1), ("split.seed", -1)])
def test_negative_seeds_are_config_errors(key, value):
    """numpy's default_rng rejects negative seeds with a ValueError: the config must catch them first."""
    values: dict = {}
    set_dotted(values, f"{key}={value}")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        run_config(values)


def test_config_hash_ignores_key_order_and_sees_values():
    a = run_config({"train": {"l2": 5e-3, "epochs": 3}})
    b = run_config({"train": {"epochs": 3, "l2": 5e-3}})
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(run_config({"train": {"l2": 5e-4, "epochs": 3}}))
    assert len(config_hash(a)) == 16


def test_set_dotted_parses_yaml_values():
    values: dict = {}
    set_dotted(values, "train.augment.reflect=false")
    set_dotted(values, "train.learning_rate=3.0e-4")
    set_dotted(values, "model.width= 8")
    assert values == {"train": {"augment": {"reflect": False}, "learning_rate": 3e-4}, "model": {"width": 8}}
    with pytest.raises(ConfigError, match="key=value"):
        set_dotted(values, "train.epochs")


def test_exponent_floats_without_a_dot_are_numbers(tmp_path):
    """``1e-3`` is how people write a learning rate; PyYAML's YAML 1.1 resolver reads it as a string."""
    values: dict = {}
    set_dotted(values, "train.learning_rate=3e-4")
    assert run_config(values)["train"]["learning_rate"] == 3e-4
    study = tmp_path / "study.yaml"
    study.write_text("name: t\ntrain: {learning_rate: 1e-3}\ngrid: {l2: [5e-3, 5e-4]}\n")
    config = load_study_config(study)
    assert config["train"]["learning_rate"] == 1e-3 and config["grid"]["l2"] == [5e-3, 5e-4]


def test_merge_does_not_mutate_defaults():
    before = repr(RUN_DEFAULTS)
    merge(RUN_DEFAULTS, {"train": {"augment": {"translate": 3}}})
    assert repr(RUN_DEFAULTS) == before


def test_load_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: invalid YAML"):
        load_yaml(bad)
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read"):
        load_yaml(tmp_path / "missing.yaml")
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: a config must be a YAML mapping"):
        load_yaml(listy)


# ------------------------------------------------------------------------ the CLI: exit 2, one line


def test_cli_unknown_key(one_line_error, no_training, tiny_data_dir):
    line = cli_error(one_line_error, "--set", "train.lerning_rate=0.1", data=tiny_data_dir)
    assert line.startswith("error: --set: unknown config key 'train.lerning_rate'")  # the override's fault


def test_cli_error_of_the_file_names_the_file(one_line_error, no_training, tiny_data_dir, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lerning_rate: 0.1\n")
    for extra in ([], ["--set", "train.epochs=3"]):  # with or without a valid override: the file is at fault
        line = cli_error(one_line_error, "--config", str(bad), *extra, data=tiny_data_dir)
        assert line.startswith(f"error: {bad}: unknown config key 'train.lerning_rate'")


def test_cli_wrong_type(one_line_error, no_training, tiny_data_dir):
    line = cli_error(one_line_error, "--set", "train.batch_size=big", data=tiny_data_dir)
    assert "train.batch_size" in line and "integer" in line


@pytest.mark.parametrize("args", [["--l2", "-1"], ["--l2", "nan"], ["--set", "grid.l2=[-0.5]"]])
def test_cli_negative_l2(one_line_error, no_training, tiny_data_dir, args):
    line = cli_error(one_line_error, *args, data=tiny_data_dir)
    assert "l2" in line


def test_cli_fractions_not_summing_to_one(one_line_error, no_training, tiny_data_dir):
    line = cli_error(one_line_error, "--set", "split.train=0.7", data=tiny_data_dir)
    assert "split.train/val/test" in line and "sum to 1" in line


def test_cli_adjustment_touching_l2(one_line_error, no_training, tiny_data_dir, tmp_path):
    config = tmp_path / "study.yaml"
    config.write_text("name: t\nretune: {max_reruns: 1, adjustments: [{l2: 0.1}]}\n")
    line = cli_error(one_line_error, "--config", str(config), data=tiny_data_dir)
    assert "retune.adjustments[0].l2" in line and "study.yaml" in line


def test_cli_invalid_yaml_file(one_line_error, no_training, tiny_data_dir, tmp_path):
    config = tmp_path / "broken.yaml"
    config.write_text("name: t\ntrain: {epochs: 3\n")
    line = cli_error(one_line_error, "--config", str(config), data=tiny_data_dir)
    assert "broken.yaml" in line and "invalid YAML" in line


def test_cli_missing_config_file(one_line_error, no_training, tiny_data_dir, tmp_path):
    line = cli_error(one_line_error, "--config", str(tmp_path / "absent.yaml"), data=tiny_data_dir)
    assert "absent.yaml" in line


@pytest.mark.parametrize(
    "assignment,fragment",
    [("train.epochs", "key=value"), ("train.epochs=[1", "train.epochs"), ("train.epochs.x=1", "train.epochs")],
)
def test_cli_bad_set_syntax(one_line_error, no_training, tiny_data_dir, assignment, fragment):
    line = cli_error(one_line_error, "--set", assignment, data=tiny_data_dir)
    assert fragment in line


def test_cli_negative_seed(one_line_error, tiny_data_dir, tmp_path):
    """split.seed -1 must be a config error (numpy's default_rng raises a ValueError traceback otherwise)."""
    line = cli_error(one_line_error, "--set", "split.seed=-1", data=tiny_data_dir, out=tmp_path / "o")
    assert "split.seed" in line


def test_cli_bad_device_name(one_line_error, tiny_data_dir, tmp_path):
    """An unknown train.device is a user error, not a torch RuntimeError traceback."""
    line = cli_error(one_line_error, "--set", "train.device=gpu", data=tiny_data_dir, out=tmp_path / "o")
    assert "train.device" in line and "gpu" in line


@pytest.mark.parametrize("l2", [[float("nan")], [5e-4, float("inf")], [True], ["5e-4"]])
def test_grid_l2_takes_finite_numbers_only(l2):
    """The one type check of config values (lgeseg.config.type_ok) refuses NaN, inf, booleans and strings when
    the config is read, before any driver starts."""
    with pytest.raises(ConfigError, match=r"config key 'grid.l2' must be a non-empty list of finite numbers"):
        study_config({"grid": {"l2": l2}})


def test_an_empty_config_file_says_the_defaults_run(tmp_path, caplog):
    """An empty YAML is valid (every key has a default) but runs the whole paper protocol: it is said."""
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    with caplog.at_level("WARNING", logger="hpo.study_config"):
        config = load_study_config(empty)
    assert config["name"] == "study" and config["train"]["epochs"] == 180  # the paper's protocol
    assert [r.getMessage() for r in caplog.records] == [
        f"{empty} is empty: every key takes its default (the paper's protocol: 180 epochs x 3 L2 values, name 'study')"
    ]
    caplog.clear()
    (tmp_path / "named.yaml").write_text("name: mine\n")
    with caplog.at_level("WARNING", logger="hpo.study_config"):
        load_study_config(tmp_path / "named.yaml")
    assert caplog.records == []
