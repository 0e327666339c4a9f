"""The training loop: augmentation, optimizer, loss and fit (resume included)."""

from __future__ import annotations

import csv
import math

import fit_spies
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lgeseg.train as train_mod
from lgeseg.config import config_hash
from lgeseg.data import IGNORE_INDEX, split_dataset
from lgeseg.errors import TrainingError
from lgeseg.train import (
    augment_batch,
    build_optimizer,
    draw_augmentation,
    fit,
    load_model,
    predict,
    warp_batch,
)
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


def test_warp_integer_shifts_move_image_and_mask_together():
    """At whole-pixel shifts the warp moves every pixel rigidly; image and mask get the same transform."""
    h, w = 12, 10
    images, masks = _coded(64, h, w)
    gen = torch.Generator().manual_seed(0)
    flip = torch.rand(64, generator=gen) < 0.5
    shift = torch.randint(-3, 4, (64, 2), generator=gen).float()
    out_img, out_mask = warp_batch(images, masks, flip, shift)
    assert out_img.shape == images.shape and out_mask.shape == masks.shape
    assert out_mask.dtype == masks.dtype
    src = _decode(out_img, h, w)
    inside = src >= 0
    assert torch.equal(out_mask[inside], (src[inside] % 3).to(out_mask.dtype))
    # shifted-in pixels: 0 in the image, IGNORE_INDEX in the mask, and nowhere else
    assert torch.equal(out_mask == IGNORE_INDEX, ~inside)
    assert torch.all(out_img[:, 0][~inside].abs() < 1e-5)
    for k, (flipped, dy, dx) in enumerate(_offsets(out_img, h, w)):
        assert (flipped, dy, dx) == (bool(flip[k]), int(shift[k, 1]), int(shift[k, 0]))
        assert int((out_mask[k] == IGNORE_INDEX).sum()) == h * w - (h - abs(dy)) * (w - abs(dx))


def test_warp_subpixel_shift_is_bilinear_image_and_nearest_label():
    """dx = 0.75, dy = -1.25 on v(r, c) = 10 (r + 1) + (c + 1), 4 x 5; values worked out by hand.

    The output at (r, c) samples the input at (r + 1.25, c - 0.75); outside the image the input is 0.
    """
    h, w = 4, 5
    r, c = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    image = (10 * (r + 1) + (c + 1)).float()[None, None]
    mask = ((r * w + c) % 3).to(torch.uint8)[None]
    out_img, out_mask = warp_batch(image, mask, torch.tensor([False]), torch.tensor([[0.75, -1.25]]))
    out = out_img[0, 0]
    assert out[0, 2].item() == pytest.approx(10 * 2.25 + 2.25)  # inside: bilinear of a plane is the plane
    assert out[1, 3].item() == pytest.approx(10 * 3.25 + 3.25)
    # column -0.75 (weights 0.75 on the zero fill, 0.25 on column 0); rows 1 and 2 (0.75, 0.25)
    assert out[0, 0].item() == pytest.approx(0.25 * (0.75 * 21 + 0.25 * 31))  # 5.875
    # row 3.25: rows 3 (0.75) and 4 (outside); columns 1 (0.75) and 2 (0.25)
    assert out[2, 2].item() == pytest.approx(0.75 * (0.75 * 42 + 0.25 * 43))  # 31.6875
    assert torch.all(out[3] == 0)  # rows 4.25: wholly outside
    # labels: nearest source (round(r + 1.25), round(c - 0.75)) = (r + 1, c - 1); outside -> IGNORE_INDEX
    expected = torch.full((h, w), IGNORE_INDEX, dtype=torch.uint8)
    expected[:3, 1:] = mask[0, 1:, :4]
    assert torch.equal(out_mask[0], expected)


def test_draw_augmentation_shifts_are_continuous_uniform_in_range():
    n, t = 4000, 10
    flip, shift = draw_augmentation(n, torch.Generator().manual_seed(1), reflect=True, translate=t)
    assert shift.shape == (n, 2) and flip.shape == (n,) and flip.dtype == torch.bool
    assert shift.min() >= -t and shift.max() <= t
    assert shift.min() < -t + 0.1 and shift.max() > t - 0.1  # the whole range is reached
    assert (shift != shift.round()).float().mean() > 0.99  # continuous, not whole pixels
    assert shift.mean(0).abs().max() < 0.3  # uniform on [-10, 10]: mean 0, sd 20 / sqrt(12) = 5.77
    assert torch.allclose(shift.std(0), torch.full((2,), 20 / 12**0.5), atol=0.2)
    assert 0.45 < flip.float().mean().item() < 0.55
    flip, shift = draw_augmentation(8, torch.Generator().manual_seed(1), reflect=False, translate=0)
    assert not flip.any() and not shift.any()


def test_augment_is_draw_then_warp_and_ignores_shifted_in_labels():
    """augment_batch = draw_augmentation + warp_batch; a label is ignored where its nearest source is outside."""
    h, w = 12, 10
    images, masks = _coded(200, h, w)
    out_img, out_mask = augment_batch(images, masks, torch.Generator().manual_seed(1), reflect=True, translate=3)
    flip, shift = draw_augmentation(200, torch.Generator().manual_seed(1), reflect=True, translate=3)
    ref_img, ref_mask = warp_batch(images, masks, flip, shift)
    assert torch.equal(out_img, ref_img) and torch.equal(out_mask, ref_mask)
    dx, dy = shift.round().abs().long().unbind(1)
    ignored = (out_mask == IGNORE_INDEX).flatten(1).sum(1)
    assert torch.equal(ignored, h * w - (h - dy) * (w - dx))


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
    assert not (out_mask == IGNORE_INDEX).any()


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
            mhat = self.m[k] / (1 - self.b1**self.t)
            vhat = self.v[k] / (1 - self.b2**self.t)
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
    by_lr = {id(p): group["lr"] for group in opt.param_groups for p in group["params"]}
    for name, p in names.items():  # unetLayers: the transposed convolutions' biases learn at 2x the rate
        assert by_lr[id(p)] == (2e-4 if name.startswith("upconvs.") and name.endswith("bias") else 1e-4), name
    assert all(g["betas"] == (0.9, 0.999) and g["eps"] == 1e-8 for g in opt.param_groups)


def test_upconv_bias_first_adam_step_is_twice_as_long():
    """Adam's first step moves each parameter by lr * g / (|g| + eps) ~ lr; the upconv biases by 2 lr."""
    model = UNet(width=4, depth=2, image_size=(16, 16))
    opt = build_optimizer(model, 1e-3, 0.0, "coupled")
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    opt.step()
    for name, p in model.named_parameters():
        factor = 2.0 if name.startswith("upconvs.") and name.endswith("bias") else 1.0
        assert torch.allclose(before[name] - p.detach(), torch.full_like(p, factor * 1e-3), rtol=0, atol=1e-6), name


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
    config = tiny_run_config(
        train__epochs=1, train__batch_size=len(split.train), train__augment={"reflect": True, "translate": 6}
    )
    batches, logits_seen = [], []
    real_augment = train_mod.augment_batch

    def spy_augment(*args, **kwargs):
        out = real_augment(*args, **kwargs)
        batches.append(out[1].clone())
        return out

    def spy_build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        model.register_forward_hook(
            lambda m, inputs, out: logits_seen.append(out.detach().clone()) if m.training else None
        )
        return model

    real_build = train_mod.build_model
    monkeypatch.setattr(train_mod, "augment_batch", spy_augment)
    monkeypatch.setattr(train_mod, "build_model", spy_build)
    result = fit(config, dataset, split, tmp_path)
    assert len(batches) == 1 and len(logits_seen) == 1
    y = batches[0].long()
    logits = logits_seen[0].double()
    ignored = y == IGNORE_INDEX
    assert ignored.any(), "translation should have shifted pixels in"
    ce_sum = F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX, reduction="sum").item()
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
    return fit_spies.fit_data()


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
    # the input layer's statistic is the training split's mean pixel (in 0-255 units)
    expected_mean = dataset.images[split.train].astype(np.float64).mean() * 255
    assert result.model.normalize.mean.item() == pytest.approx(expected_mean, rel=1e-6)


@pytest.mark.parametrize("shuffle", ["once", "every-epoch"])
def test_fit_drops_last_partial_batch_and_shuffles(fit_data, tiny_run_config, tmp_path, monkeypatch, shuffle):
    """Each epoch is a permutation of the training split minus the last partial batch; shuffle 'once'
    (MATLAB's default) repeats the first epoch's order, so the same images are left out every epoch."""
    dataset, split = fit_data
    n_train = len(split.train)
    batch = 4
    assert n_train % batch != 0, "fixture must leave a partial batch"
    config = tiny_run_config(
        train__epochs=3,
        train__batch_size=batch,
        train__shuffle=shuffle,
        train__augment={"reflect": False, "translate": 0},
    )
    calls = []
    real_augment = train_mod.augment_batch

    def spy(images, masks, *args, **kwargs):
        calls.append(images.detach().clone())
        return real_augment(images, masks, *args, **kwargs)

    monkeypatch.setattr(train_mod, "augment_batch", spy)
    fit(config, dataset, split, tmp_path)
    steps = n_train // batch
    assert len(calls) == 3 * steps
    assert all(len(c) == batch for c in calls)
    all_images = torch.from_numpy(dataset.images)
    train_set = set(split.train)
    orders = []
    for epoch in range(3):
        used = []
        for c in calls[epoch * steps : (epoch + 1) * steps]:
            for img in c[:, 0]:
                idx = [i for i in range(len(all_images)) if torch.equal(all_images[i], img)]
                assert len(idx) == 1
                used.append(idx[0])
        assert len(set(used)) == len(used) == steps * batch  # a permutation, no repeats
        assert set(used) <= train_set  # nothing from validation or test
        orders.append(used)
    if shuffle == "once":
        assert orders[0] == orders[1] == orders[2]
    else:
        assert orders[0] != orders[1] and orders[1] != orders[2]


def test_piecewise_schedule_drops_every_period(fit_data, tiny_run_config, tmp_path, monkeypatch):
    """trainingOptions' piecewise schedule: epoch e trains at lr * factor ** ((e - 1) // period), upconv
    biases at twice that."""
    dataset, split = fit_data
    config = tiny_run_config(
        train__epochs=5,
        train__learning_rate=1e-3,
        train__lr_schedule="piecewise",
        train__lr_drop_factor=0.5,
        train__lr_drop_period=2,
    )
    seen = fit_spies.record_learning_rates(monkeypatch)
    fit(config, dataset, split, tmp_path)
    steps = len(split.train) // 4
    per_epoch = [seen[e * steps] for e in range(5)]
    assert all(seen[e * steps : (e + 1) * steps] == [per_epoch[e]] * steps for e in range(5))
    expected = [1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4]
    for lrs, lr in zip(per_epoch, expected):
        assert lrs == pytest.approx([lr, 2 * lr])


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


@pytest.mark.parametrize(
    "every,kill_after,train",
    [
        (1, 2, {}),
        (2, 3, {}),
        (1, 3, {"shuffle": "every-epoch", "lr_schedule": "piecewise", "lr_drop_period": 2}),
        (1, 2, {"validation_frequency": 3, "lr_schedule": "onecycle"}),  # mid-epoch validation, per-step schedule
    ],
)
def test_fit_resume_equals_uninterrupted(fit_data, tiny_run_config, tmp_path, every, kill_after, train):
    """A run killed after a checkpoint and resumed ends bit-identical to an uninterrupted one."""
    dataset, split = fit_data
    config = tiny_run_config({"train": {"epochs": 4, "checkpoint_every": every, **train}})
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


def test_auto_precision_is_bf16_only_where_native(monkeypatch):
    """``auto``: bf16 autocast on a CPU with AVX-512 BF16 or AMX, none where bf16 would be emulated."""
    cpu = torch.device("cpu")
    for avx512_bf16, amx, native in [(True, False, True), (False, True, True), (False, False, False)]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert train_mod.native_bf16(cpu) is native
        with train_mod.autocast(cpu, "auto"):
            assert torch.is_autocast_enabled("cpu") is native
        with train_mod.autocast(cpu, "fp32"):
            assert not torch.is_autocast_enabled("cpu")
