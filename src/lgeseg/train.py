"""The training loop: one U-Net trained with the study's protocol.

:func:`fit` trains one network: Adam with MATLAB's coupled L2, the study's augmentation, per-epoch
validation and resumable checkpoints. It reports each finished epoch through an ``on_epoch`` callback,
which is how :mod:`lgeseg.run` and the HPO layer follow a run without this module knowing about them.
The run around the loop (data, split, evaluation, outputs) is :func:`lgeseg.run.run`.

The hot loop keeps the whole data set on the device and augments a batch at a time there, so no Python
runs per sample; host synchronisation happens once per epoch.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .checkpoint import RESTART_REMEDY, read_checkpoint
from .config import config_hash
from .data import IGNORE_INDEX, Dataset, Split
from .errors import DataError, TrainingError
from .losses import build_loss
from .models import build_model, l2_parameters, model_from_spec, model_spec

logger = logging.getLogger(__name__)

#: Columns of ``history.csv`` and keys of each :attr:`FitResult.history` row.
HISTORY_FIELDS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy")


@dataclass
class EpochStats:
    """What one finished epoch reports; ``val_accuracy`` is the study's 'validation accuracy'.

    Attributes:
        epoch: the epoch just finished, 1-based.
        epochs: the run's total number of epochs.
        train_loss: mean over the epoch's steps of MATLAB's pixel cross-entropy (nats per pixel).
        train_accuracy: fraction of the epoch's labelled (not shifted-in) training pixels classified right.
        val_loss: mean pixel cross-entropy on the unaugmented validation split (nats per pixel).
        val_accuracy: global pixel accuracy on the validation split, in [0, 1].
        best_val_accuracy: the highest ``val_accuracy`` so far.
        seconds: wall time of the epoch, training and validation (0 for a replayed epoch).
        replayed: an epoch done before a resume, reported again so that observers see every epoch.
    """

    epoch: int
    epochs: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    best_val_accuracy: float
    seconds: float
    replayed: bool = False


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        model: the network after the last epoch (in train mode's weights; call ``eval()`` to infer).
        history: one dict per epoch with the keys of :data:`HISTORY_FIELDS`.
        best_state: ``state_dict`` of the network with the highest validation accuracy (first such epoch).
        best_epoch: that epoch, 1-based (0 if no epoch ran).
        best_val_accuracy: its validation accuracy, in [0, 1].
        device: the device trained on, e.g. ``"cpu"`` or ``"cuda:0"``.
        resumed_from_epoch: the epoch the checkpoint it resumed from had reached (0 = a fresh run).
    """

    model: torch.nn.Module
    history: list[dict]
    best_state: dict[str, torch.Tensor]
    best_epoch: int
    best_val_accuracy: float
    device: str
    resumed_from_epoch: int = 0


def memory_format_for(channels_last: bool | str, device: torch.device) -> torch.memory_format:
    """The memory format of ``train.channels_last``: channels-last for ``true``, and for ``auto`` on CUDA."""
    use = channels_last is True or (channels_last == "auto" and device.type == "cuda")
    return torch.channels_last if use else torch.contiguous_format


def resolve_device(name: str, option: str = "train.device") -> torch.device:
    """'auto' picks CUDA when present, else the CPU.

    Raises:
        TrainingError: not a device name, or CUDA where there is none; naming ``option`` (the config key or
            command-line option the name came from).
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TrainingError(f"{option} {name!r} is not a device (auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"{option} is {name!r} but no CUDA device is available")
    return device


def draw_augmentation(
    batch: int, generator: torch.Generator, reflect: bool, translate: float, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random draws of ``imageDataAugmenter('RandXReflection', reflect, 'RandX/YTranslation', [-t t])``.

    Args:
        batch: number of images N.
        generator: the random source, on ``device``.
        reflect: reflect left-right with probability 0.5.
        translate: largest shift t in pixels (0 = no translation).
        device: where the draws are made.

    Returns:
        ``flip``, (N,) bool, and ``shift``, (N, 2) float32 (x, y) shifts in pixels, each uniform in [-t, t]
        (continuous, as MATLAB draws them; zeros when ``translate`` is 0).
    """
    flip = (
        torch.rand(batch, generator=generator, device=device) < 0.5
        if reflect
        else torch.zeros(batch, dtype=torch.bool, device=device)
    )
    shift = torch.zeros(batch, 2, device=device)
    if translate > 0:
        shift = (torch.rand(batch, 2, generator=generator, device=device) * 2 - 1) * translate
    return flip, shift


def warp_batch(
    images: torch.Tensor, masks: torch.Tensor, flip: torch.Tensor, shift: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reflect, then translate, each image and its mask, as MATLAB's augmenter does with ``imwarp``.

    The output pixel at column x, row y takes the reflected input at (x - dx, y - dy): bilinear for the
    image with 0 outside it, nearest neighbour for the mask with :data:`IGNORE_INDEX` where the nearest
    source pixel lies outside (MATLAB's undefined label). Batched on the images' device with
    ``affine_grid`` / ``grid_sample`` (pixel centres at ``align_corners=False``).

    Args:
        images: (N, 1, H, W) float images.
        masks: (N, H, W) integer class indices (:data:`~lgeseg.data.IGNORE_INDEX` for unlabelled pixels).
        flip: (N,) bool, reflect left-right first.
        shift: (N, 2) float (dx, dy) shifts in pixels (positive = right, down); None = no translation.

    Returns:
        The warped (N, 1, H, W) images and (N, H, W) masks, of the input dtypes.
    """
    # No data-dependent branches: the loop never waits for the device.
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    masks = torch.where(flip[:, None, None], masks.flip(-1), masks)
    if shift is None:
        return images, masks
    batch, _, height, width = images.shape
    theta = torch.zeros(batch, 2, 3, device=images.device, dtype=torch.float32)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    # Normalised coordinates span 2 over W (H) pixels: the source of output x is x - dx.
    theta[:, 0, 2] = -2.0 * shift[:, 0] / width
    theta[:, 1, 2] = -2.0 * shift[:, 1] / height
    grid = F.affine_grid(theta, [batch, 1, height, width], align_corners=False)
    warped = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # Labels + 1, so that the zero padding marks pixels whose nearest source is outside the image.
    labels = F.grid_sample(
        masks.unsqueeze(1).float() + 1, grid, mode="nearest", padding_mode="zeros", align_corners=False
    )[:, 0]
    masks = torch.where(labels > 0, labels - 1, torch.full_like(labels, IGNORE_INDEX)).to(masks.dtype)
    return warped.to(images.dtype), masks


def augment_batch(
    images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator, reflect: bool, translate: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The study's augmentation for a batch at once, on the batch's device.

    Left-right reflection with p=0.5, then an x and a y shift each uniform in [-translate, translate]
    pixels, drawn per image and identical for image and mask (:func:`draw_augmentation`,
    :func:`warp_batch`).

    Args:
        images: (N, 1, H, W) float images.
        masks: (N, H, W) integer class indices.
        generator: the random source, on the batch's device.
        reflect: reflect left-right with probability 0.5.
        translate: largest shift in pixels (0 = no translation).

    Returns:
        The augmented (N, 1, H, W) images and (N, H, W) masks, of the input dtypes. Image pixels shifted in
        from outside are 0 (bilinear at the border), mask pixels :data:`IGNORE_INDEX`.
    """
    flip, shift = draw_augmentation(len(images), generator, reflect, translate, images.device)
    return warp_batch(images, masks, flip, shift if translate > 0 else None)


def predicted_classes(logits: torch.Tensor) -> torch.Tensor:
    """``logits.argmax(1)`` of (N, C, H, W) logits, faster on the CPU (accuracy and predictions).

    On the CPU, argmax over the strided class axis is several times slower than a running max over the
    C class planes; both return the first maximal class. They differ only where a logit is NaN, which
    only a network with NaN weights gives, and :func:`fit` stops with an error at the NaN loss that
    makes them. On other devices this is ``argmax(1)``.
    """
    if logits.device.type != "cpu":
        return logits.argmax(1)
    best = logits[:, 0]
    index = torch.zeros(best.shape, dtype=torch.long, device=logits.device)
    for k in range(1, logits.shape[1]):
        plane = logits[:, k]
        index.masked_fill_(plane > best, k)
        best = torch.maximum(best, plane)
    return index


def build_optimizer(model: torch.nn.Module, learning_rate: float, l2: float, mode: str) -> torch.optim.Optimizer:
    """Adam with L2 on convolution weights only (:func:`lgeseg.models.l2_parameters`: biases and
    normalisation layers' scale and shift excluded), as MATLAB applies L2Regularization.

    ``coupled`` adds ``l2 * w`` to the gradient before the Adam step (MATLAB); ``decoupled`` is AdamW.
    Parameters named in the model's ``learn_rate_factors()`` (if it has one; the U-Net's transposed
    convolution biases: 2) get their own group at ``learning_rate`` times the factor, as MATLAB's
    ``WeightLearnRateFactor`` / ``BiasLearnRateFactor``.

    Args:
        model: the network.
        learning_rate: the global learning rate.
        l2: the L2 factor of weights (biases get 0, MATLAB's ``BiasL2Factor`` 0).
        mode: ``coupled`` or ``decoupled``.

    Returns:
        The optimizer, one parameter group per (weight or bias, learning-rate factor).
    """
    factors = model.learn_rate_factors() if hasattr(model, "learn_rate_factors") else {}
    decayed = {id(p) for p in l2_parameters(model)[0]}
    groups: dict[tuple[bool, float], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        groups.setdefault((id(param) in decayed, factors.get(name, 1.0)), []).append(param)
    param_groups = [
        {"params": params, "weight_decay": l2 if is_weight else 0.0, "lr": learning_rate * factor}
        for (is_weight, factor), params in groups.items()
    ]
    optimizer_class = torch.optim.Adam if mode == "coupled" else torch.optim.AdamW
    return optimizer_class(param_groups, lr=learning_rate, betas=(0.9, 0.999), eps=1e-8)


def build_scheduler(
    optimizer: torch.optim.Optimizer, options: dict, steps_per_epoch: int = 1
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The learning-rate schedule ``train.lr_schedule``; None for ``none`` (the paper's constant rate).

    ``piecewise`` (trainingOptions' ``LearnRateSchedule``, stepped once per epoch) multiplies every group's
    learning rate by ``lr_drop_factor`` every ``lr_drop_period`` epochs: epoch e (1-based) trains at
    ``learning_rate * factor ** ((e - 1) // period)``.

    ``onecycle`` (not in MATLAB; Smith and Topin, "Super-convergence", 2019) is
    :class:`torch.optim.lr_scheduler.OneCycleLR` over the whole run, stepped once per iteration: each group
    warms up from 1/25 of its rate to its rate (``learning_rate`` times its factor) over the first 30 % of
    the iterations, then anneals along a cosine to 1/10^4 of the start; Adam's beta1 cycles 0.95 -> 0.85 -> 0.95.

    Args:
        optimizer: from :func:`build_optimizer`.
        options: the ``train`` section of a run config.
        steps_per_epoch: iterations per epoch (``onecycle`` spans ``epochs * steps_per_epoch``).

    Returns:
        A ``StepLR`` or a ``OneCycleLR`` (see :func:`steps_per_iteration`), or None.
    """
    if options["lr_schedule"] == "none":
        return None
    if options["lr_schedule"] == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=options["epochs"] * steps_per_epoch,
        )
    return torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=options["lr_drop_period"], gamma=options["lr_drop_factor"]
    )


def steps_per_iteration(scheduler: torch.optim.lr_scheduler.LRScheduler | None) -> bool:
    """Whether ``scheduler`` is stepped after every iteration (``onecycle``), not after every epoch."""
    return isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively: CUDA, or a CPU with AVX-512 BF16 or AMX (oneDNN's bf16
    kernels). Elsewhere bf16 is emulated and slower than fp32."""
    if device.type == "cuda":
        return True
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu has no public check
    return device.type == "cpu" and any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def autocast(device: torch.device, precision: str):
    """bf16 autocast for ``bf16``, and for ``auto`` where the device computes bf16 natively; else nothing."""
    use_bf16 = precision == "bf16" or (precision == "auto" and native_bf16(device))
    return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()


def inference_batch_size(device: torch.device) -> int:
    """Inference batch: small on the CPU (thin U-Nets run fastest at 8-16 images there), large on GPUs."""
    return 16 if device.type == "cpu" else 128


@torch.no_grad()
def predict(
    model: torch.nn.Module, images: torch.Tensor, precision: str = "auto", batch_size: int | None = None
) -> torch.Tensor:
    """Class indices (N, H, W) uint8 for images (N, 1, H, W) on the model's device."""
    model.eval()
    batch_size = batch_size or inference_batch_size(images.device)
    out = []
    for start in range(0, len(images), batch_size):
        with autocast(images.device, precision):
            out.append(predicted_classes(model(images[start : start + batch_size])).to(torch.uint8))
    return torch.cat(out) if out else torch.empty(0, *images.shape[2:], dtype=torch.uint8)


@torch.no_grad()
def _validate(model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor, precision: str) -> tuple[float, float]:
    """Mean pixel cross-entropy and global pixel accuracy on unaugmented images."""
    model.eval()
    batch_size = inference_batch_size(images.device)
    loss_sum = torch.zeros((), device=images.device, dtype=torch.float64)
    correct = torch.zeros((), device=images.device, dtype=torch.int64)
    for start in range(0, len(images), batch_size):
        y = masks[start : start + batch_size].long()
        with autocast(images.device, precision):
            logits = model(images[start : start + batch_size])
        loss_sum += F.cross_entropy(logits.float(), y, ignore_index=IGNORE_INDEX, reduction="sum")
        correct += (predicted_classes(logits) == y).sum()  # predictions are never IGNORE_INDEX
    # The loss is divided by all pixels (as in training), the accuracy counts labelled pixels only.
    return loss_sum.item() / masks.numel(), correct.item() / max(1, int((masks != IGNORE_INDEX).sum()))


def validation_due(iteration: int, iterations: int, epoch_end: bool, epoch: int, options: dict) -> bool:
    """Whether the loop validates after ``iteration`` (1-based, counted over the whole run).

    ``train.validation_frequency`` 0 (the default): at the end of every epoch. N > 0: as MATLAB's
    ``ValidationFrequency`` N (its default is 50 iterations): after the first iteration, every N-th and the
    last; and also at the end of each epoch in ``train.validation_epochs`` (the HPO layer puts the retune
    rule's check epoch there, so the rule judges the network of its check point, not an older one).

    Args:
        iteration: the iteration just done, 1-based, counted from the run's start.
        iterations: the run's total, epochs x steps per epoch.
        epoch_end: whether ``iteration`` ends an epoch.
        epoch: the epoch it belongs to, 1-based.
        options: the ``train`` section of a run config.
    """
    frequency = options["validation_frequency"]
    if frequency == 0:
        return epoch_end
    return (
        iteration == 1
        or iteration % frequency == 0
        or iteration == iterations
        or (epoch_end and epoch in options["validation_epochs"])
    )


def _save_atomic(obj: dict, path: Path) -> None:
    """``torch.save`` to memory, then one plain file write and an atomic rename: a full disk is then an
    ``OSError`` (ENOSPC) naming the file, not torch's "enforce fail at inline_container.cc ... unexpected
    pos"."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(tmp)) from None
    os.replace(tmp, path)


def _write_history(history: list[dict], path: Path) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)
    os.replace(tmp, path)


def load_model(path: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """A network saved in ``best.pt`` or ``last.pt`` (any architecture), with the checkpoint's metadata."""
    ckpt = read_checkpoint(path, device)
    model = model_from_spec(ckpt["model_spec"]).to(device)
    model.load_state_dict(ckpt["model"])
    return model, ckpt


def _copy_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@dataclass
class _Progress:
    """What a run has reached, all of which a checkpoint restores.

    ``val_loss`` / ``val_accuracy`` are those of the latest validation (MATLAB's curves carry the last
    value between validations); ``best_*`` are of the best validation so far (first such one).
    """

    best_state: dict[str, torch.Tensor]
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_accuracy: float = -1.0
    val_loss: float = math.nan
    val_accuracy: float = math.nan

    def validated(self, model: torch.nn.Module, epoch: int, val_loss: float, val_accuracy: float) -> None:
        """Record a validation of ``model`` made during ``epoch``; keep its weights if it is the best."""
        self.val_loss, self.val_accuracy = val_loss, val_accuracy
        if val_accuracy > self.best_val_accuracy:
            self.best_epoch, self.best_val_accuracy = epoch, val_accuracy
            self.best_state = _copy_state(model)


@dataclass
class _Checkpoints:
    """``last.pt`` (everything a resume needs) and ``best.pt`` (the best-validation network) of one run."""

    out: Path
    meta: dict

    @property
    def last(self) -> Path:
        return self.out / "last.pt"

    @property
    def best(self) -> Path:
        return self.out / "best.pt"

    def save(self, progress: _Progress, model, optimizer, scheduler, generator, device: torch.device) -> None:
        _save_atomic(
            {
                **self.meta,
                "model": progress.best_state,
                "epoch": progress.best_epoch,
                "val_accuracy": progress.best_val_accuracy,
            },
            self.best,
        )
        _save_atomic(
            {
                **self.meta,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "epoch": progress.epoch,
                "history": progress.history,
                "best_epoch": progress.best_epoch,
                "best_val_accuracy": progress.best_val_accuracy,
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "rng_generator": generator.get_state(),
            },
            self.last,
        )

    def restore(self, progress: _Progress, model, optimizer, scheduler, generator, device: torch.device) -> None:
        """Load ``last.pt`` (and ``best.pt``) into the run's objects, if a previous run left them."""
        if not self.last.exists():
            return
        ckpt = read_checkpoint(self.last, device, remedy=RESTART_REMEDY)
        if ckpt.get("config_hash") != self.meta["config_hash"]:
            raise TrainingError(
                f"{self.last}: checkpoint was made with another config; use a new output folder or delete it"
            )
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng_cpu"])
        if device.type == "cuda" and ckpt.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng_cuda"], device)
        generator.set_state(ckpt["rng_generator"].to(generator.get_state().device))
        progress.history = list(ckpt["history"])
        progress.epoch, progress.best_epoch = ckpt["epoch"], ckpt["best_epoch"]
        progress.best_val_accuracy = ckpt["best_val_accuracy"]
        if progress.history:
            progress.val_loss = progress.history[-1]["val_loss"]
            progress.val_accuracy = progress.history[-1]["val_accuracy"]
        if self.best.exists():
            best = read_checkpoint(self.best, device, remedy=f"delete it and {self.last.name} to start the run again")
            if not isinstance(best.get("model"), dict):
                raise DataError(
                    f"{self.best}: not a checkpoint of lgeseg (no model weights); delete it and "
                    f"{self.last.name} to start the run again"
                )
            progress.best_state = best["model"]


def _replay(history: list[dict], epochs: int, on_epoch: Callable[[EpochStats], None] | None) -> None:
    """Report the epochs a resumed run did before, in order, so an observer that missed them sees them."""
    if on_epoch is None:
        return
    best = -1.0
    for row in history:
        best = max(best, row["val_accuracy"])
        on_epoch(EpochStats(epochs=epochs, best_val_accuracy=best, seconds=0.0, replayed=True, **row))


def _train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn,
    x: torch.Tensor,
    y: torch.Tensor,
    precision: str,
    memory_format: torch.memory_format,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One mini-batch: forward, loss, backward, Adam. Returns the loss and the batch's correct and
    labelled pixel counts, as device tensors (no host synchronisation)."""
    model.train()
    with autocast(x.device, precision):
        logits = model(x.contiguous(memory_format=memory_format))
    loss = loss_fn(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    # Predictions are class indices < num_classes, never IGNORE_INDEX, so no mask is needed here.
    correct = (predicted_classes(logits.detach()) == y).sum()
    return loss.detach(), correct, (y != IGNORE_INDEX).sum()


def _check_finite(losses: torch.Tensor, epoch: int) -> None:
    finite = torch.isfinite(losses)
    if not bool(finite.all()):
        bad = int((~finite).nonzero()[0])
        raise TrainingError(
            f"loss became {losses[bad].item()} at epoch {epoch}, batch {bad + 1}/{len(losses)}; "
            f"try a smaller train.learning_rate"
        )


def steps_per_epoch(n_train: int, batch_size: int, where: str = "train.batch_size", split: str = "") -> int:
    """Mini-batches per epoch: ``n_train // batch_size``, as MATLAB drops each epoch's last partial mini-batch.

    Args:
        n_train: images in the training split.
        batch_size: images per mini-batch.
        where, split: name the batch size and the split in the message (a study names its config key and fold).

    Raises:
        TrainingError: the batch is larger than the training split, so an epoch would have no mini-batch.
    """
    steps = n_train // batch_size
    if steps == 0:
        raise TrainingError(f"{where} {batch_size} is larger than the training split{split} ({n_train} images)")
    return steps


def fit(
    config: dict,
    dataset: Dataset,
    split: Split,
    out_dir: str | Path,
    on_epoch: Callable[[EpochStats], None] | None = None,
    progress: bool = False,
    record: dict | None = None,
) -> FitResult:
    """Train one network; resumes from ``out_dir/last.pt`` when it exists.

    A resumed run ends with the same weights as an uninterrupted one: the checkpoint carries the model,
    the optimizer, the epoch, the history and every RNG state the loop draws from. On resume the epochs
    already done are first passed to ``on_epoch`` again (``replayed=True``), so an observer that missed
    them (a driver that died) sees the whole run in order. When the run validates (see
    :func:`validation_due`) changes only the history and the best network, never the final weights.

    Args:
        config: a validated run config (:func:`lgeseg.config.run_config`); ``seed``, ``model`` and ``train``
            are read.
        dataset: the data set; images (N, H, W) in [0, 1], masks (N, H, W) class indices.
        split: indices into ``dataset`` of the training and validation images (the test split is not read).
        out_dir: folder for ``last.pt``, ``best.pt`` and ``history.csv``; created if missing.
        on_epoch: called with the :class:`EpochStats` of every finished (or replayed) epoch.
        progress: show a progress bar (epochs, loss, validation accuracy; :mod:`lgeseg.progress`).
        record: stored in both checkpoints as is (:func:`lgeseg.run.run` puts the data and split
            fingerprints there, so a run continued on changed data is refused).

    Returns:
        The :class:`FitResult`.

    Raises:
        TrainingError: the batch is larger than the training split, ``train.device`` is unusable,
            ``last.pt`` was made with another config, or the loss became NaN or infinite (naming the epoch
            and batch).
    """
    # 1. Options (MATLAB's trainingOptions), device, seeds.
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    options = config["train"]
    epochs, batch_size, precision = options["epochs"], options["batch_size"], options["precision"]
    device = resolve_device(options["device"])
    memory_format = memory_format_for(options["channels_last"], device)
    torch.manual_seed(config["seed"])
    generator = torch.Generator(device=device)
    generator.manual_seed(config["seed"])

    # 2. The whole data set on the device; MATLAB drops the last partial mini-batch of each epoch.
    images = torch.from_numpy(dataset.images).unsqueeze(1).to(device)
    masks = torch.from_numpy(dataset.masks).to(device)
    x_train, y_train = images[split.train], masks[split.train]
    x_val, y_val = images[split.val].contiguous(memory_format=memory_format), masks[split.val]
    steps = steps_per_epoch(len(split.train), batch_size)

    # 3. Network (input statistics from the training split), Adam with L2, schedule, loss.
    shape = (1, len(dataset.labels), dataset.images.shape[1:])
    model = build_model(config, *shape).to(device)
    model.normalize.fit(x_train)  # imageInputLayer's statistics
    model = model.to(memory_format=memory_format)
    optimizer = build_optimizer(model, options["learning_rate"], options["l2"], options["l2_mode"])
    scheduler = build_scheduler(optimizer, options, steps)
    per_iteration = steps_per_iteration(scheduler)
    loss_fn = build_loss(options["loss"], IGNORE_INDEX)  # ignored pixels stay out (lgeseg.losses)
    # Shuffle 'once' (MATLAB's default): one order for every epoch, drawn before the first; with the last
    # partial mini-batch dropped, the same images are then left out of every epoch, as in MATLAB.
    fixed_order = (
        torch.randperm(len(split.train), generator=generator, device=device) if options["shuffle"] == "once" else None
    )

    # 4. Resume from last.pt if a previous run left one; report its epochs again.
    meta = {"model_spec": model_spec(config, *shape), "labels": dataset.labels, "config_hash": config_hash(config)}
    checkpoints = _Checkpoints(out, {**meta, **(record or {})})
    state = _Progress(best_state=_copy_state(model))
    checkpoints.restore(state, model, optimizer, scheduler, generator, device)
    resumed_from = state.epoch
    if resumed_from:
        logger.info("%s: continuing from epoch %d of %d", out / "last.pt", resumed_from, epochs)
    _replay(state.history, epochs, on_epoch)

    # 5. The loop: epochs of mini-batches; validation when due; a checkpoint and a report per epoch.
    bar = None
    if progress:
        from .progress import progress_bar  # a live bar on a terminal, one plain line per epoch in a log

        bar = progress_bar(total=epochs, initial=state.epoch, desc="train", unit="epoch")
    augment = options["augment"]
    try:
        for epoch in range(state.epoch + 1, epochs + 1):
            started = time.perf_counter()
            if fixed_order is not None:
                order = fixed_order
            else:
                order = torch.randperm(len(split.train), generator=generator, device=device)
            losses = torch.zeros(steps, device=device)
            correct = torch.zeros((), device=device, dtype=torch.int64)
            counted = torch.zeros((), device=device, dtype=torch.int64)
            for step in range(steps):
                batch = order[step * batch_size : (step + 1) * batch_size]
                x, y = augment_batch(
                    x_train[batch], y_train[batch], generator, augment["reflect"], augment["translate"]
                )
                losses[step], batch_correct, batch_counted = _train_step(
                    model, optimizer, loss_fn, x, y.long(), precision, memory_format
                )
                correct += batch_correct
                counted += batch_counted
                if per_iteration:
                    scheduler.step()
                iteration = (epoch - 1) * steps + step + 1
                if validation_due(iteration, epochs * steps, step == steps - 1, epoch, options):
                    state.validated(model, epoch, *_validate(model, x_val, y_val, precision))
            _check_finite(losses, epoch)
            if scheduler is not None and not per_iteration:
                scheduler.step()

            row = {
                "epoch": epoch,
                "train_loss": losses.mean().item(),
                "train_accuracy": correct.item() / max(1, counted.item()),
                "val_loss": state.val_loss,
                "val_accuracy": state.val_accuracy,
            }
            state.history.append(row)
            state.epoch = epoch
            if epoch % options["checkpoint_every"] == 0 or epoch == epochs:
                checkpoints.save(state, model, optimizer, scheduler, generator, device)
            _write_history(state.history, out / "history.csv")
            if bar is not None:
                bar.set_postfix(loss=f"{row['train_loss']:.4f}", val_acc=f"{state.val_accuracy:.4f}")
                bar.update(1)
            if on_epoch is not None:
                seconds = time.perf_counter() - started
                on_epoch(EpochStats(epochs=epochs, best_val_accuracy=state.best_val_accuracy, seconds=seconds, **row))
    finally:
        if bar is not None:
            bar.close()
    return FitResult(
        model=model,
        history=state.history,
        best_state=state.best_state,
        best_epoch=state.best_epoch,
        best_val_accuracy=state.best_val_accuracy,
        device=str(device),
        resumed_from_epoch=resumed_from,
    )


__all__ = [
    "HISTORY_FIELDS",
    "EpochStats",
    "FitResult",
    "augment_batch",
    "build_optimizer",
    "build_scheduler",
    "draw_augmentation",
    "fit",
    "load_model",
    "predict",
    "resolve_device",
    "validation_due",
    "warp_batch",
]
