"""The report's parts follow the shape of the space: every categorical axis besides L2 that the trials vary
(architecture, loss) splits the record, so two losses are never paired as if they were seeds."""

from __future__ import annotations

from conftest import trial_record

from dashboards.load import StudyRecord, TrialRecord
from dashboards.report import slug


def _trial(number: int, l2: float, seed: int, loss: str | None, architecture: str | None = None) -> TrialRecord:
    return trial_record(
        number,
        l2=l2,
        seed=seed,
        batch_size=8,
        epochs=2,
        curve={},
        test_metrics={"dataset": {"MeanIoU": 0.5}},
        epochs_run=2,
        best_val_accuracy=0.9,
        loss=loss,
        architecture=architecture,
    )


def _record(trials: list[TrialRecord], **config) -> StudyRecord:
    return StudyRecord("s", "sqlite:///s.db", config, None, None, {"bg": 0}, False, trials)


def test_a_grid_over_loss_is_reported_per_loss():
    trials = [
        _trial(i, l2, seed, loss)
        for i, (loss, l2, seed) in enumerate(
            (loss, l2, seed) for loss in ("dice", "cross-entropy") for l2 in (1e-3, 1e-4) for seed in (0, 1)
        )
    ]
    groups = _record(trials).by_groups()
    assert list(groups) == ["loss=cross-entropy", "loss=dice"]
    for label, part in groups.items():
        assert {t.loss for t in part.trials} == {label.split("=")[1]}
        assert part.l2_values == [1e-4, 1e-3] and part.seeds == [0, 1]  # each L2 x seed once: pairs by seed
        assert len(part.trials) == 4


def test_groups_cross_architecture_and_loss_and_fill_unrecorded_values_from_the_config():
    trials = [
        _trial(0, 1e-3, 0, None, None),  # recorded before the params: the config's values
        _trial(1, 1e-3, 0, "dice", "matlab-unet"),
        _trial(2, 1e-3, 0, "dice", "monai-unet"),
    ]
    groups = _record(trials, model={"architecture": "matlab-unet"}, train={"loss": "cross-entropy"}).by_groups()
    assert list(groups) == [
        "architecture=matlab-unet, loss=cross-entropy",
        "architecture=matlab-unet, loss=dice",
        "architecture=monai-unet, loss=dice",
    ]
    assert slug("architecture=monai-unet, loss=dice") == "architecture-monai-unet-loss-dice"


def test_an_l2_only_study_is_one_part():
    record = _record([_trial(0, 1e-3, 0, "dice"), _trial(1, 1e-4, 0, "dice")])
    assert record.by_groups() == {None: record}
