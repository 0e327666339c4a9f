"""Patient-wise k-fold cross-validation split (split.folds / fold / stratify): every patient tested once,
strata balanced, folds in the split fingerprint, the single split unchanged, and one-line errors."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest

from lgeseg.config import ConfigError, run_config
from lgeseg.data import fold_groups, load_dataset, read_manifest_column, split_dataset, split_from_config
from lgeseg.errors import DataError
from lgeseg.fingerprint import split_difference


def _patients(dataset, indices):
    return {dataset.patients[i] for i in indices}


@pytest.mark.parametrize("folds, n_patients", [(2, 5), (5, 10), (5, 12), (10, 10)])
def test_each_patient_is_tested_exactly_once(make_dataset, folds, n_patients):
    dataset = make_dataset(n=3 * n_patients, slices_per_patient=3)
    tested = Counter()
    for fold in range(folds):
        split = split_dataset(dataset, 0.6, 0.2, 0.2, seed=4, folds=folds, fold=fold)
        train, val, test = (_patients(dataset, part) for part in (split.train, split.val, split.test))
        assert not (train & val or train & test or val & test)
        assert train | val | test == set(dataset.patients)
        assert train and val and test
        tested.update(test)
        # Validation from the other patients by the fractions rule: 0.2 / 0.8 of their images, within
        # one patient (3 images).
        rest = len(split.train) + len(split.val)
        assert abs(len(split.val) - 0.25 * rest) <= 3
    assert tested == Counter({p: 1 for p in set(dataset.patients)})


def test_folds_balance_image_counts_and_are_deterministic(make_dataset):
    dataset = make_dataset(n=30, slices_per_patient=3)
    groups = fold_groups(dataset, 5, seed=1)
    assert [len(g) for g in groups] == [2] * 5
    assert fold_groups(dataset, 5, seed=1) == groups
    assert fold_groups(dataset, 5, seed=2) != groups  # the split seed shuffles the folds


def _stratified_dir(make_dataset_dir, n_patients=12, slices=2, kinds=("normal", "infarct")):
    root = make_dataset_dir(n_patients=n_patients, slices=slices)
    rows = []
    with (root / "manifest.csv").open() as fh:
        for row in csv.DictReader(fh):
            number = int(row["patient"][-2:])
            # Strata in blocks, not alternating: folds made without stratifying can come out unbalanced.
            rows.append({**row, "pathology": kinds[0] if number < n_patients // 2 else kinds[1]})
    with (root / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, ["file", "patient", "pathology"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_stratify_balances_the_column_across_folds(make_dataset_dir):
    dataset = load_dataset(_stratified_dir(make_dataset_dir))
    stratum = {p: "normal" if int(p[-2:]) < 6 else "infarct" for p in set(dataset.patients)}
    for seed in range(3):
        groups = fold_groups(dataset, 3, seed=seed, stratify="pathology")
        # 6 + 6 patients over 3 folds: 2 of each in every fold.
        assert [Counter(stratum[p] for p in g) for g in groups] == [Counter(normal=2, infarct=2)] * 3


def test_fingerprint_holds_the_fold(make_dataset):
    dataset = make_dataset(n=30, slices_per_patient=3)
    records = [split_dataset(dataset, seed=0, folds=5, fold=f).to_json(dataset) for f in range(5)]
    assert len({r["hash"] for r in records}) == 5
    assert records[1]["folds"] == 5 and records[1]["fold"] == 1 and records[1]["stratify"] is None
    assert split_difference(records[0], records[1]) == (
        "the cross-validation fold changed (was {'folds': 5, 'fold': 0}, now {'folds': 5, 'fold': 1})"
    )
    single = split_dataset(dataset, seed=0).to_json(dataset)
    assert split_difference(single, records[0]).startswith("the cross-validation fold changed (was one split")


def test_without_folds_the_split_is_recorded_exactly_as_before(make_dataset):
    """Hashes of the single split pinned from before folds existed (byte-identical split.json)."""
    record = split_dataset(make_dataset(), seed=0).to_json(make_dataset())
    assert record["hash"] == "e8e385e037a5da2d"
    assert list(record) == ["by", "seed", "fractions", "hash", "train", "val", "test"]
    dataset = make_dataset(n=60, slices_per_patient=4)
    assert split_dataset(dataset, seed=3).to_json(dataset)["hash"] == "0042795127c27e09"
    config = run_config({})["split"]
    assert split_from_config(dataset, config) == split_dataset(dataset, 0.6, 0.2, 0.2, seed=0)


@pytest.mark.parametrize(
    "split, match",
    [
        ({"folds": 1}, r"'split\.folds' must be an integer >= 2"),
        ({"folds": True}, r"'split\.folds' must be an integer >= 2"),
        ({"folds": 5, "fold": 5}, r"'split\.fold' must be from 0 to 4"),
        ({"folds": 5, "fold": -1}, r"'split\.fold' must be from 0 to 4"),
        ({"fold": 2}, r"'split\.fold' is 2 but 'split\.folds' is not set"),
        ({"stratify": "pathology"}, r"'split\.stratify' needs 'split\.folds'"),
        ({"folds": 3, "stratify": ""}, r"'split\.stratify' must be a manifest column name"),
    ],
)
def test_config_checks(split, match):
    with pytest.raises(ConfigError, match=match):
        run_config({"split": split})


def test_data_errors(make_dataset, make_dataset_dir):
    with pytest.raises(DataError, match=r"split\.folds is 9 but there are only 8 patients"):
        split_dataset(make_dataset(n=24), folds=9)
    dataset = load_dataset(_stratified_dir(make_dataset_dir))
    with pytest.raises(
        DataError,
        match=r"manifest\.csv: no column 'diagnosis' for split\.stratify \(columns: file, patient, pathology\)",
    ):
        split_dataset(dataset, folds=3, stratify="diagnosis")


def test_cli_errors_come_before_anything_is_written(tiny_data_dir, one_line_error, tmp_path):
    out = tmp_path / "run"
    base = ["train", "--data", str(tiny_data_dir), "--out", str(out), "--epochs", "1"]
    line = one_line_error([*base, "--set", "split.folds=9"])
    assert line.startswith("error: ") and line.endswith("split.folds is 9 but there are only 8 patients")
    line = one_line_error([*base, "--set", "split.folds=4", "--set", "split.stratify=pathology"])
    assert "no column 'pathology' for split.stratify" in line
    assert not out.exists()


def test_a_run_uses_its_fold(tiny_data_dir, tiny_run_config, tmp_path):
    from lgeseg.run import run

    config = tiny_run_config(data=str(tiny_data_dir), split={"folds": 4, "fold": 3}, train__epochs=1)
    result = run(config, tmp_path / "run")
    recorded = json.loads((tmp_path / "run" / "split.json").read_text())
    dataset = load_dataset(tiny_data_dir)
    test_patients = {dataset.patients[dataset.files.index(f)] for f in recorded["test"]}
    assert test_patients == set(fold_groups(dataset, 4, seed=0)[3]) and recorded["fold"] == 3
    # The field metrics sit beside MATLAB's in metrics.json, per test patient.
    field = result.test_metrics["field_metrics"]
    assert {row["patient"] for row in field["patients"]} == test_patients
    assert field["unit"] == "pixel" and set(field["summary"]) == set(dataset.labels)
    assert result.test_metrics["dataset"]["MeanIoU"] is not None


def test_a_grid_trains_every_fold_so_it_refuses_a_pinned_fold(tiny_data_dir, one_line_error, tmp_path):
    out = tmp_path / "study"
    argv = ["grid", "--data", str(tiny_data_dir), "--out", str(out), "--set", "split.folds=3", "--no-report"]
    line = one_line_error([*argv, "--set", "split.fold=1"])
    assert "'split.fold' is 1, but a study over split.folds trains every fold as a replicate" in line
    assert not out.exists()


@pytest.mark.realdata
def test_emidec_folds_balance_pathology(real_data_dir):
    """EMIDEC's 100 patients (33 normal, 67 infarct) in 5 folds stratified by pathology: every patient
    tested once, 6 or 7 normal patients per fold (33 / 5 = 6.6)."""
    dataset = load_dataset(real_data_dir)
    pathology = dict(zip(dataset.patients, read_manifest_column(real_data_dir, "pathology", dataset.files)))
    groups = fold_groups(dataset, 5, seed=0, stratify="pathology")
    assert sorted(p for g in groups for p in g) == sorted(set(dataset.patients))
    assert Counter(pathology.values()) == Counter(normal=33, infarct=67)
    assert all(Counter(pathology[p] for p in g)["normal"] in (6, 7) for g in groups)
