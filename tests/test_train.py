"""The training protocol: augmentation, optimizer, loss, the fit loop (resume included) and a whole run."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

import lgeseg.train as train_mod
from lgeseg.config import config_hash, run_config
from lgeseg.data import load_dataset, split_dataset
from lgeseg.errors import TrainingError
from lgeseg.metrics import evaluate, json_safe
from lgeseg.png import read_mask
from lgeseg.train import IGNORE, augment_batch, build_optimizer, fit, load_model, predict, run
from lgeseg.unet import UNet

HISTORY_HEADER = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy"]


# ------------------------------------------------------------------------------------------ augment

def _coded(batch: int, h: int = 12, w: int = 10):
    """Images whose value encodes the pixel position (all > 0), masks a function of that position."""
    pos = torch.arange(h * w).reshape(h, w)
    images = ((pos + 1).float() / (h * w + 1)).expand(batch, 1, h, w).clone()
    masks = (pos % 3).to(torch.uint8).expand(batch, h, w).clone()
    return images, masks


def _decode(images: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Source position index per pixel (-1 where the image is 0)."""
    return torch.round(images[:, 0] * (h * w + 1)).long() - 1


def _offsets(images, h, w):
    """Per image: (flipped, dy, dx) with out[i, j] = in[i - dy, (flipped ? W-1-(j - dx) : j - dx)]."""
    src = _decode(images, h, w)
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    result = []
    for k in range(len(images)):
        valid = src[k] >= 0
        assert valid.any()
        si, sj = src[k][valid] // w, src[k][valid] % w
        dy = (rows[valid] - si).unique()
        assert len(dy) == 1, "rows not shifted rigidly"
        if len((cols[valid] - sj).unique()) == 1:
            flipped, dx = False, (cols[valid] - sj).unique()
        else:
            flipped, dx = True, (cols[valid] - (w - 1 - sj)).unique()
        assert len(dx) == 1, "columns not shifted (or reflected) rigidly"
        result.append((flipped, int(dy), int(dx)))
    return result


def test_augment_same_transform_for_image_and_mask():
    h, w = 12, 10
    images, masks = _coded(64, h, w)
    gen = torch.Generator().manual_seed(0)
    out_img, out_mask = augment_batch(images, masks, gen, reflect=True, translate=3)
    assert out_img.shape == images.shape and out_mask.shape == masks.shape
    assert out_mask.dtype == masks.dtype
    src = _decode(out_img, h, w)
    inside = src >= 0
    assert torch.equal(out_mask[inside], (src[inside] % 3).to(out_mask.dtype))
    # shifted-in pixels: 0 in the image, IGNORE in the mask, and nowhere else
    assert torch.equal(out_mask == IGNORE, ~inside)
    assert torch.all(out_img[:, 0][~inside] == 0)
    _offsets(out_img, h, w)  # rigid shift (+ reflection) per image


def test_augment_translation_bounds_and_range():
    h, w, t = 12, 10, 3
    images, masks = _coded(400, h, w)
    gen = torch.Generator().manual_seed(1)
    out_img, out_mask = augment_batch(images, masks, gen, reflect=False, translate=t)
    offsets = _offsets(out_img, h, w)
    dys = [dy for _, dy, _ in offsets]
    dxs = [dx for _, _, dx in offsets]
    assert not any(f for f, _, _ in offsets)
    assert set(dys) == set(range(-t, t + 1))  # integers, bounds inclusive, all reached
    assert set(dxs) == set(range(-t, t + 1))
    for k, (_, dy, dx) in enumerate(offsets):
        assert int((out_mask[k] == IGNORE).sum()) == h * w - (h - abs(dy)) * (w - abs(dx))


def test_augment_reflect_only_flips_about_half():
    h, w = 6, 8
    images, masks = _coded(1000, h, w)
    gen = torch.Generator().manual_seed(2)
    out_img, out_mask = augment_batch(images, masks, gen, reflect=True, translate=0)
    flipped = torch.tensor([torch.equal(out_img[k], images[k].flip(-1)) for k in range(1000)])
    same = torch.tensor([torch.equal(out_img[k], images[k]) for k in range(1000)])
    assert torch.all(flipped ^ same)  # each is either reflected left-right or untouched
    assert 0.45 < flipped.float().mean().item() < 0.55
    assert torch.equal(out_mask[flipped], masks[flipped].flip(-1))
    assert torch.equal(out_mask[~flipped], masks[~flipped])
    assert not (out_mask == IGNORE).any()


def test_augment_identity_when_off():
    images, masks = _coded(5)
    gen = torch.Generator().manual_seed(3)
    out_img, out_mask = augment_batch(images, masks, gen, reflect=False, translate=0)
    assert torch.equal(out_img, images) and torch.equal(out_mask, masks)


def test_augment_is_reproducible_from_the_generator():
    images, masks = _coded(16)
    a = augment_batch(images, masks, torch.Generator().manual_seed(7), True, 4)
    b = augment_batch(images, masks, torch.Generator().manual_seed(7), True, 4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# ---------------------------------------------------------------------------------------- optimizer

class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.head = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)))


class _AdamReference:
    """Hand-written Adam (torch's eps placement) in float64; L2 coupled into the gradient or decoupled (AdamW)."""

    def __init__(self, lr, l2, decoupled, b1=0.9, b2=0.999, eps=1e-8):
        self.lr, self.l2, self.decoupled, self.b1, self.b2, self.eps = lr, l2, decoupled, b1, b2, eps
        self.m, self.v, self.t = {}, {}, 0

    def step(self, params: dict, grads: dict) -> dict:
        self.t += 1
        out = {}
        for k, p in params.items():
            g = grads[k]
            decay = self.l2 if k.endswith("weight") else 0.0  # MATLAB: BiasL2Factor 0
            if self.decoupled:
                p = p * (1 - self.lr * decay)
            else:
                g = g + decay * p
            self.m[k] = self.b1 * self.m.get(k, 0) + (1 - self.b1) * g
            self.v[k] = self.b2 * self.v.get(k, 0) + (1 - self.b2) * g * g
            mhat = self.m[k] / (1 - self.b1 ** self.t)
            vhat = self.v[k] / (1 - self.b2 ** self.t)
            out[k] = p - self.lr * mhat / (vhat.sqrt() + self.eps)
        return out


def _loss(model, x, step):
    return (model(x) ** 2).mean() * (step + 1)


@pytest.mark.parametrize("mode", ["coupled", "decoupled"])
def test_optimizer_matches_hand_written_adam(mode):
    torch.manual_seed(0)
    model = _Tiny()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_()  # biases non-zero too, so decaying them would show
    ref_model = _Tiny().double()
    ref_model.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    lr, l2 = 1e-2, 0.3
    opt = build_optimizer(model, lr, l2, mode)
    assert type(opt) is (torch.optim.Adam if mode == "coupled" else torch.optim.AdamW)
    reference = _AdamReference(lr, l2, decoupled=mode == "decoupled")
    x = torch.rand(4, 1, 6, 6)
    for step in range(4):
        opt.zero_grad()
        _loss(model, x, step).backward()
        opt.step()
        ref_model.zero_grad()
        _loss(ref_model, x.double(), step).backward()
        params = {k: p.detach() for k, p in ref_model.named_parameters()}
        new = reference.step(params, {k: p.grad.detach() for k, p in ref_model.named_parameters()})
        with torch.no_grad():
            for k, p in ref_model.named_parameters():
                p.copy_(new[k])
    for k, p in model.named_parameters():
        assert torch.allclose(p.double(), dict(ref_model.named_parameters())[k], rtol=1e-5, atol=1e-6), k
    # the L2 term mattered: without it the weights end elsewhere (and the biases in the same place)
    torch.manual_seed(0)
    plain = _Tiny()
    with torch.no_grad():
        for param in plain.parameters():
            param.normal_()
    opt = build_optimizer(plain, lr, 0.0, mode)
    for step in range(4):
        opt.zero_grad()
        _loss(plain, x, step).backward()
        opt.step()
    assert (plain.conv.weight - model.conv.weight).abs().max() > 1e-3


def test_optimizer_decays_weights_only():
    model = UNet(width=4, depth=2, image_size=(16, 16))
    opt = build_optimizer(model, 1e-4, 5e-4, "coupled")
    by_decay = {}
    for group in opt.param_groups:
        for p in group["params"]:
            by_decay[id(p)] = group["weight_decay"]
    names = dict(model.named_parameters())
    assert len(by_decay) == len(names)  # every parameter is optimised, once
    for name, p in names.items():
        assert by_decay[id(p)] == (5e-4 if name.endswith("weight") else 0.0), name
    assert all(g["lr"] == 1e-4 and g["betas"] == (0.9, 0.999) and g["eps"] == 1e-8 for g in opt.param_groups)


def test_optimizer_zero_gradient_only_l2_moves_weights():
    """With zero loss gradient, coupled L2 still shrinks weights (sign-wise, Adam) and leaves biases alone."""
    model = _Tiny()
    with torch.no_grad():
        model.conv.bias.fill_(1.0)
    w0, b0 = model.conv.weight.detach().clone(), model.conv.bias.detach().clone()
    opt = build_optimizer(model, 1e-3, 1e-2, "coupled")
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.equal(model.conv.bias, b0)
    nz = w0 != 0
    assert torch.allclose((w0 - model.conv.weight)[nz], 1e-3 * torch.sign(w0[nz]), rtol=1e-3, atol=1e-6)


# ------------------------------------------------------------------------------------------- loss

def test_training_loss_is_matlab_spatial_cross_entropy(monkeypatch, make_dataset, tiny_run_config, tmp_path):
    """train_loss = sum of CE over labelled pixels / (N*H*W), ignored (shifted-in) pixels counted in N*H*W.

    There is no loss helper in lgeseg.train; the test spies on the augmented batch and the logits that
    fit() computes its loss from, with one step in one epoch.
    """
    dataset = make_dataset(n=12, size=16)
    split = split_dataset(dataset, 0.6, 0.2, 0.2)
    config = tiny_run_config(train__epochs=1, train__batch_size=len(split.train),
                             train__augment={"reflect": True, "translate": 6})
    batches, logits_seen = [], []
    real_augment = train_mod.augment_batch

    def spy_augment(*args, **kwargs):
        out = real_augment(*args, **kwargs)
        batches.append(out[1].clone())
        return out

    def spy_build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        model.register_forward_hook(
            lambda m, inputs, out: logits_seen.append(out.detach().clone()) if m.training else None)
        return model

    real_build = train_mod.build_model
    monkeypatch.setattr(train_mod, "augment_batch", spy_augment)
    monkeypatch.setattr(train_mod, "build_model", spy_build)
    result = fit(config, dataset, split, tmp_path)
    assert len(batches) == 1 and len(logits_seen) == 1
    y = batches[0].long()
    logits = logits_seen[0].double()
    ignored = y == IGNORE
    assert ignored.any(), "translation should have shifted pixels in"
    ce_sum = F.cross_entropy(logits, y, ignore_index=IGNORE, reduction="sum").item()
    matlab = ce_sum / y.numel()
    mean_of_labelled = ce_sum / (~ignored).sum().item()
    assert abs(matlab - mean_of_labelled) > 1e-3 * matlab  # the two conventions are distinguishable here
    assert result.history[0]["train_loss"] == pytest.approx(matlab, rel=1e-5)
    # accuracy counts labelled pixels only
    pred = logits.argmax(1)
    acc = ((pred == y) & ~ignored).sum().item() / (~ignored).sum().item()
    assert result.history[0]["train_accuracy"] == pytest.approx(acc, abs=1e-12)


# -------------------------------------------------------------------------------------------- fit

@pytest.fixture(scope="module")
def fit_data():
    from conftest import build_dataset

    dataset = build_dataset(n=30, size=16)
    split = split_dataset(dataset, 0.6, 0.2, 0.2)
    return dataset, split


def test_fit_history_and_files(fit_data, tiny_run_config, tmp_path):
    dataset, split = fit_data
    config = tiny_run_config(train__epochs=3)
    seen = []
    result = fit(config, dataset, split, tmp_path, on_epoch=seen.append)
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert all(list(row) == HISTORY_HEADER for row in result.history)
    assert all(math.isfinite(row[k]) for row in result.history for k in HISTORY_HEADER)
    assert all(0 <= row[k] <= 1 for row in result.history for k in ("train_accuracy", "val_accuracy"))
    assert [s.epoch for s in seen] == [1, 2, 3] and all(s.epochs == 3 for s in seen)
    assert seen[-1].best_val_accuracy == max(r["val_accuracy"] for r in result.history)
    with (tmp_path / "history.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == HISTORY_HEADER and len(rows) == 4
    for row, hist in zip(rows[1:], result.history):
        assert int(row[0]) == hist["epoch"]
        assert [float(v) for v in row[1:]] == pytest.approx([hist[k] for k in HISTORY_HEADER[1:]], rel=1e-12)
    assert (tmp_path / "last.pt").exists() and (tmp_path / "best.pt").exists()
    assert result.resumed_from_epoch == 0 and result.device == "cpu"
    # the model's mean image is the training split's mean (in 0-255 units)
    expected_mean = torch.from_numpy(dataset.images[split.train]).mean(0) * 255
    assert torch.allclose(result.model.mean_image[0, 0], expected_mean, atol=1e-3)


def test_fit_drops_last_partial_batch_and_uses_train_split_only(fit_data, tiny_run_config, tmp_path, monkeypatch):
    dataset, split = fit_data
    n_train = len(split.train)
    batch = 4
    assert n_train % batch != 0, "fixture must leave a partial batch"
    config = tiny_run_config(train__epochs=2, train__batch_size=batch,
                             train__augment={"reflect": False, "translate": 0})
    calls = []
    real_augment = train_mod.augment_batch

    def spy(images, masks, *args, **kwargs):
        calls.append(images.detach().clone())
        return real_augment(images, masks, *args, **kwargs)

    monkeypatch.setattr(train_mod, "augment_batch", spy)
    fit(config, dataset, split, tmp_path)
    steps = n_train // batch
    assert len(calls) == 2 * steps
    assert all(len(c) == batch for c in calls)
    all_images = torch.from_numpy(dataset.images)
    train_set = set(split.train)
    for epoch in range(2):
        used = []
        for c in calls[epoch * steps:(epoch + 1) * steps]:
            for img in c[:, 0]:
                idx = [i for i in range(len(all_images)) if torch.equal(all_images[i], img)]
                assert len(idx) == 1
                used.append(idx[0])
        assert len(set(used)) == len(used) == steps * batch  # a permutation, no repeats
        assert set(used) <= train_set  # nothing from validation or test


def test_fit_batch_larger_than_train_split(fit_data, tiny_run_config, tmp_path):
    dataset, split = fit_data
    config = tiny_run_config(train__batch_size=len(split.train) + 1)
    with pytest.raises(TrainingError, match="batch_size"):
        fit(config, dataset, split, tmp_path)


def test_fit_nan_loss_names_epoch_and_batch(fit_data, tiny_run_config, tmp_path):
    dataset, split = fit_data
    from lgeseg.data import Dataset

    images = dataset.images.copy()
    images[split.train[0], 3, 3] = np.nan
    bad = Dataset(**{**dataset.__dict__, "images": images})
    config = tiny_run_config(train__epochs=2)
    with pytest.raises(TrainingError) as info:
        fit(config, bad, split, tmp_path)
    message = str(info.value)
    assert "epoch 1" in message and "batch 1/" in message and "nan" in message.lower()
    assert "\n" not in message


def test_fit_divergence_raises(fit_data, tiny_run_config, tmp_path):
    dataset, split = fit_data
    config = tiny_run_config(train__epochs=2, train__learning_rate=1e30)
    with pytest.raises(TrainingError, match=r"at epoch \d+, batch \d+/\d+"):
        fit(config, dataset, split, tmp_path)


class _Kill(Exception):
    pass


def _states_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("every,kill_after", [(1, 2), (2, 3)])
def test_fit_resume_equals_uninterrupted(fit_data, tiny_run_config, tmp_path, every, kill_after):
    """A run killed after a checkpoint and resumed ends bit-identical to an uninterrupted one."""
    dataset, split = fit_data
    config = tiny_run_config(train__epochs=4, train__checkpoint_every=every)
    a = fit(config, dataset, split, tmp_path / "A")

    def killer(stats):
        if stats.epoch == kill_after:
            raise _Kill

    with pytest.raises(_Kill):
        fit(config, dataset, split, tmp_path / "B", on_epoch=killer)
    b = fit(config, dataset, split, tmp_path / "B")
    expected_resume = (kill_after // every) * every
    assert b.resumed_from_epoch == expected_resume
    _states_equal(a.model.state_dict(), b.model.state_dict())
    _states_equal(a.best_state, b.best_state)
    assert a.history == b.history
    assert a.best_epoch == b.best_epoch and a.best_val_accuracy == b.best_val_accuracy
    assert (tmp_path / "A" / "history.csv").read_text() == (tmp_path / "B" / "history.csv").read_text()
    last_a = torch.load(tmp_path / "A" / "last.pt", weights_only=True)
    last_b = torch.load(tmp_path / "B" / "last.pt", weights_only=True)
    _states_equal(last_a["model"], last_b["model"])
    assert last_a["epoch"] == last_b["epoch"] == 4


def test_fit_resume_of_finished_fit_trains_nothing(fit_data, tiny_run_config, tmp_path):
    dataset, split = fit_data
    config = tiny_run_config(train__epochs=2)
    a = fit(config, dataset, split, tmp_path)
    seen = []
    b = fit(config, dataset, split, tmp_path, on_epoch=seen.append)
    # Nothing is trained again; the two finished epochs are only replayed to the observer, in order.
    assert [(s.epoch, s.replayed) for s in seen] == [(1, True), (2, True)] and b.resumed_from_epoch == 2
    assert [s.val_accuracy for s in seen] == [row["val_accuracy"] for row in a.history]
    assert seen[1].best_val_accuracy == max(row["val_accuracy"] for row in a.history)
    _states_equal(a.model.state_dict(), b.model.state_dict())
    assert a.history == b.history


def test_fit_resume_with_other_config_raises(fit_data, tiny_run_config, tmp_path):
    dataset, split = fit_data
    fit(tiny_run_config(train__epochs=2), dataset, split, tmp_path)
    with pytest.raises(TrainingError, match="another config"):
        fit(tiny_run_config(train__epochs=2, train__l2=5e-3), dataset, split, tmp_path)


def test_checkpoints_load_weights_only_and_best_is_best_val(fit_data, tiny_run_config, tmp_path):
    dataset, split = fit_data
    config = tiny_run_config(train__epochs=4, train__learning_rate=3e-3)
    result = fit(config, dataset, split, tmp_path)
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    accs = [row["val_accuracy"] for row in result.history]
    best_epoch = int(np.argmax(accs)) + 1  # first epoch with the highest validation accuracy
    assert best["epoch"] == result.best_epoch == last["best_epoch"] == best_epoch
    assert best["val_accuracy"] == pytest.approx(max(accs))
    assert last["epoch"] == 4 and last["history"] == result.history
    assert best["config_hash"] == last["config_hash"] == config_hash(config)
    assert best["labels"] == dataset.labels
    _states_equal(best["model"], result.best_state)
    _states_equal(last["model"], result.model.state_dict())
    # the saved best network really scores the best validation accuracy
    model, _ = load_model(tmp_path / "best.pt")
    x_val = torch.from_numpy(dataset.images[split.val]).unsqueeze(1)
    pred = predict(model, x_val, "fp32").numpy()
    acc = (pred == dataset.masks[split.val]).mean()
    assert acc == pytest.approx(max(accs), abs=1e-9)


def test_fit_is_deterministic_for_a_seed_and_varies_with_it(fit_data, tiny_run_config, tmp_path):
    dataset, split = fit_data
    a = fit(tiny_run_config(train__epochs=1), dataset, split, tmp_path / "a")
    b = fit(tiny_run_config(train__epochs=1), dataset, split, tmp_path / "b")
    c = fit(tiny_run_config(train__epochs=1, seed=1), dataset, split, tmp_path / "c")
    _states_equal(a.model.state_dict(), b.model.state_dict())
    assert not torch.equal(a.model.head.weight, c.model.head.weight)


# -------------------------------------------------------------------------------------------- run

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """run() on the session's tiny dataset folder, 3 epochs, select=final; and its inputs."""
    from conftest import tiny_config, write_dataset_dir

    root = tmp_path_factory.mktemp("run")
    data = write_dataset_dir(root / "data", n_patients=8, slices=3, size=16)
    config = tiny_config(data=str(data), train__epochs=3, train__learning_rate=3e-3)
    out = root / "out"
    result = run(config, out)
    return config, out, result


def test_run_writes_all_outputs(finished_run):
    config, out, result = finished_run
    for name in ("metrics.json", "val_metrics.json", "history.csv", "split.json", "config.yaml", "run.json",
                 "best.pt", "last.pt"):
        assert (out / name).is_file(), name
    assert (out / "predictions").is_dir()
    with (out / "history.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == HISTORY_HEADER and [int(r[0]) for r in rows[1:]] == [1, 2, 3]
    assert yaml.safe_load((out / "config.yaml").read_text()) == run_config(config)


def _check_metrics_shape(metrics: dict, classes: list[str], n_images: int) -> None:
    assert set(metrics) == {"classes", "confusion_matrix", "normalized_confusion_matrix", "dataset", "class",
                            "images"}
    assert metrics["classes"] == classes
    c = len(classes)
    assert np.array(metrics["confusion_matrix"]).shape == (c, c)
    assert np.array(metrics["normalized_confusion_matrix"], dtype=float).shape == (c, c)
    assert list(metrics["dataset"]) == ["GlobalAccuracy", "MeanAccuracy", "MeanIoU", "WeightedIoU", "MeanBFScore",
                                        "BFScoreImages"]
    assert list(metrics["class"]) == classes
    assert all(list(v) == ["Accuracy", "IoU", "MeanBFScore", "Dice", "BFScoreImages"]
               for v in metrics["class"].values())
    assert len(metrics["images"]) == n_images
    assert all(list(img) == ["file", *metrics["dataset"]][:-1] + ["BFScoreClasses"] for img in metrics["images"])


def test_run_metrics_equal_evaluate_on_written_predictions(finished_run):
    config, out, result = finished_run
    dataset = load_dataset(config["data"])
    split = json.loads((out / "split.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    classes = list(dataset.labels)
    _check_metrics_shape(metrics, classes, len(split["test"]))
    assert metrics == result.test_metrics
    files = sorted(p.name for p in (out / "predictions").iterdir())
    assert files == sorted(split["test"])
    values = set()
    preds = []
    for name in split["test"]:
        from PIL import Image

        arr = np.asarray(Image.open(out / "predictions" / name))
        assert arr.dtype == np.uint8 and arr.shape == dataset.images.shape[1:]
        values |= set(np.unique(arr).tolist())
        preds.append(read_mask(out / "predictions" / name, dataset.labels))
    assert values <= set(dataset.labels.values())
    truth = np.stack([dataset.masks[dataset.files.index(f)] for f in split["test"]])
    expected = json_safe(evaluate(np.stack(preds), truth, classes, split["test"]))
    assert metrics["confusion_matrix"] == expected["confusion_matrix"]
    _approx_equal(metrics, expected)
    # validation metrics: shape and file list
    val = json.loads((out / "val_metrics.json").read_text())
    _check_metrics_shape(val, classes, len(split["val"]))
    assert [img["file"] for img in val["images"]] == split["val"]


def _approx_equal(a, b, rel=1e-9) -> bool:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        return all(_approx_equal(a[k], b[k], rel) for k in a)
    if isinstance(a, list):
        assert len(a) == len(b)
        return all(_approx_equal(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=rel, abs=1e-12)
        return True
    assert a == b
    return True


def test_run_split_is_patient_wise(finished_run):
    config, out, _ = finished_run
    dataset = load_dataset(config["data"])
    split = json.loads((out / "split.json").read_text())
    patient = dict(zip(dataset.files, dataset.patients))
    sets = [{patient[f] for f in split[k]} for k in ("train", "val", "test")]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert sorted(split["train"] + split["val"] + split["test"]) == dataset.files
    assert split["by"] == "patient"


def test_run_json(finished_run):
    config, out, result = finished_run
    info = json.loads((out / "run.json").read_text())
    split = json.loads((out / "split.json").read_text())
    assert info["finished"] is True
    assert info["seed"] == config["seed"]
    assert info["config_hash"] == config_hash(run_config(config))
    assert info["split_hash"] == split["hash"]
    assert info["device"] == "cpu"
    assert {"lgeseg", "torch", "numpy", "python"} <= set(info["versions"])
    assert info["versions"]["torch"] == torch.__version__
    assert info["epochs_run"] == 3 and info["selected_epoch"] == 3  # select=final
    assert info["l2"] == config["train"]["l2"]
    assert result.info == info


def _test_metrics_of(checkpoint, out, dataset) -> dict:
    """The metrics JSON of the network in ``checkpoint`` on the test split recorded in ``out/split.json``."""
    model, _ = load_model(checkpoint)
    test = [dataset.files.index(f) for f in json.loads((out / "split.json").read_text())["test"]]
    pred = predict(model, torch.from_numpy(dataset.images[test]).unsqueeze(1), "fp32").numpy()
    return json_safe(evaluate(pred, dataset.masks[test], list(dataset.labels), [dataset.files[i] for i in test]))


def test_run_final_selects_last_network(finished_run):
    config, out, result = finished_run
    _approx_equal(result.test_metrics, _test_metrics_of(out / "last.pt", out, load_dataset(config["data"])))


def test_run_best_val_selects_best_network(tmp_path, tiny_data_dir, tiny_run_config):
    config = tiny_run_config(data=str(tiny_data_dir), train__epochs=4, train__learning_rate=3e-3,
                             train__select="best_val")
    result = run(config, tmp_path)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert result.info["selected_epoch"] == result.info["best_epoch"] == best["epoch"]
    dataset = load_dataset(tiny_data_dir)
    _approx_equal(result.test_metrics, _test_metrics_of(tmp_path / "best.pt", tmp_path, dataset))
    model, _ = load_model(tmp_path / "best.pt")
    val = [dataset.files.index(f) for f in json.loads((tmp_path / "split.json").read_text())["val"]]
    val_pred = predict(model, torch.from_numpy(dataset.images[val]).unsqueeze(1), "fp32").numpy()
    assert result.val_metrics["dataset"]["GlobalAccuracy"] == pytest.approx(result.info["best_val_accuracy"])
    assert (val_pred == dataset.masks[val]).mean() == pytest.approx(result.info["best_val_accuracy"])


def test_run_into_finished_folder_does_not_retrain(finished_run, monkeypatch):
    config, out, result = finished_run
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}

    def no_fit(*args, **kwargs):
        raise AssertionError("a finished run must not be trained again")

    monkeypatch.setattr(train_mod, "fit", no_fit)
    again = run(config, out)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()} == stamps
    assert again.test_metrics == result.test_metrics and again.history == result.history
    assert again.info == result.info


def test_refused_rerun_leaves_folder_consistent(tmp_path, tiny_data_dir, tiny_run_config):
    """Rerunning a folder with another config is refused and must not rewrite the folder's config/split."""
    config = tiny_run_config(data=str(tiny_data_dir), train__epochs=1)
    run(config, tmp_path)
    before = {name: (tmp_path / name).read_text() for name in ("config.yaml", "split.json", "run.json")}
    other = tiny_run_config(data=str(tiny_data_dir), train__epochs=1, train__l2=5e-3,
                            split={"train": 0.5, "val": 0.25, "test": 0.25, "seed": 3})
    with pytest.raises(TrainingError, match="another config"):
        run(other, tmp_path)
    after = {name: (tmp_path / name).read_text() for name in before}
    assert after == before


@pytest.mark.realdata
def test_run_on_real_data_smoke(real_data_dir, tmp_path, tiny_run_config):
    """One epoch of a tiny U-Net on a patient subset of the real EMIDEC export, through run()."""
    dataset = load_dataset(real_data_dir)
    keep_patients = sorted(set(dataset.patients))[:12]
    keep = [i for i, p in enumerate(dataset.patients) if p in keep_patients]
    from lgeseg.data import Dataset

    subset = Dataset(root=dataset.root, files=[dataset.files[i] for i in keep], images=dataset.images[keep],
                     masks=dataset.masks[keep], labels=dataset.labels,
                     patients=[dataset.patients[i] for i in keep], synthetic=False)
    config = tiny_run_config(data=str(real_data_dir), train__epochs=1, train__batch_size=8,
                             train__learning_rate=1e-3)
    result = run(config, tmp_path, dataset=subset)
    split = json.loads((tmp_path / "split.json").read_text())
    assert len(result.history) == 1 and math.isfinite(result.history[0]["train_loss"])
    assert list(result.test_metrics["classes"]) == list(dataset.labels)
    assert len(list((tmp_path / "predictions").iterdir())) == len(split["test"])
    assert result.info["data_dir"] == str(dataset.root) and result.info["synthetic"] is False
