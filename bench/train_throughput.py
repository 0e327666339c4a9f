"""Training throughput of lgeseg's real loop (:func:`lgeseg.train.fit`) against a tutorial-style reference.

For each width, in one process, strictly alternating epochs (ours, reference, ours, reference, ...)
after one warm-up epoch of each, so that machine noise hits both sides:

* **ours**: ``lgeseg.train.fit`` itself, one call of ``warmup + reps`` epochs on a subset of the training
  split of ``steps * batch`` images (and a validation subset in the split's own train:val ratio), with the
  config's precision / channels_last (``auto``: bf16 where native, channels_last on CUDA). The
  reference's epochs run inside fit's ``on_epoch`` callback, outside fit's epoch clock. Ours' training-
  loop time is read from inside each epoch (start of epoch to the start of validation), so the
  epoch-level work after it (validation, best-state copy, checkpoints, history) is timed separately.
* **reference**: the loop most PyTorch tutorials write: fp32, a ``Dataset`` whose ``__getitem__`` applies
  the reflection and translation per sample with numpy, a ``DataLoader`` (batch 16, shuffle, drop_last),
  ``x.to(device)``, ``CrossEntropyLoss(ignore_index=255)``, ``Adam(weight_decay=l2)``, ``loss.item()``
  every step. Same U-Net, same images, same batch, same device.

Also reports model FLOPs per image (FlopCounterMode on forward + backward), achieved TFLOP/s, the fraction
of the device's dense bf16 peak on CUDA, and the epoch-level overheads (augmentation, metric accumulation,
validation, checkpointing, history) as a fraction of a full epoch of the chosen data set.

    python bench/train_throughput.py                       # CPU: widths 8 and 64
    python bench/train_throughput.py --device cuda --widths 64 --steps 26
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (sets sys.path for lgeseg)
import numpy as np  # noqa: E402
import torch  # noqa: E402

import lgeseg.train as lt  # noqa: E402
from lgeseg.config import run_config  # noqa: E402
from lgeseg.data import Split, load_dataset, split_dataset  # noqa: E402
from lgeseg.unet import UNet  # noqa: E402

IGNORE_INDEX = lt.IGNORE_INDEX


# --------------------------------------------------------------------------------------------- reference


class ReferenceDataset(torch.utils.data.Dataset):
    """Per-sample numpy augmentation: left-right flip p=0.5, integer shift in [-t, t], zero / 255 fill."""

    def __init__(self, images: np.ndarray, masks: np.ndarray, reflect: bool, translate: int, seed: int = 0):
        self.images, self.masks = images, masks
        self.reflect, self.translate = reflect, translate
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image, mask = self.images[i], self.masks[i].astype(np.int64)
        if self.reflect and self.rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        if self.translate > 0:
            dy, dx = self.rng.integers(-self.translate, self.translate + 1, size=2)
            h, w = image.shape
            shifted_image = np.zeros_like(image)
            shifted_mask = np.full_like(mask, IGNORE_INDEX)
            ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
            xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
            shifted_image[yd, xd] = image[ys, xs]
            shifted_mask[yd, xd] = mask[ys, xs]
            image, mask = shifted_image, shifted_mask
        return torch.from_numpy(np.ascontiguousarray(image)[None]), torch.from_numpy(np.ascontiguousarray(mask))


class Reference:
    """A plain training loop, kept alive across repetitions like a real run."""

    def __init__(self, images, masks, width, depth, device, batch, lr, l2, augment, workers, seed=0):
        torch.manual_seed(seed)
        self.device = device
        self.model = UNet(width=width, depth=depth, image_size=tuple(images.shape[1:])).to(device)
        self.model.normalize.fit(torch.from_numpy(images).unsqueeze(1).to(device))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr, weight_decay=l2)
        self.criterion = torch.nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
        data = ReferenceDataset(images, masks, augment["reflect"], augment["translate"], seed)
        self.loader = torch.utils.data.DataLoader(
            data, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers, persistent_workers=workers > 0
        )

    def epoch(self) -> dict:
        started = time.perf_counter()
        self.model.train()
        running_loss, steps = 0.0, 0
        for x, y in self.loader:
            x, y = x.to(self.device), y.to(self.device)
            self.optimizer.zero_grad()
            loss = self.criterion(self.model(x), y)
            loss.backward()
            self.optimizer.step()
            running_loss += loss.item()
            steps += 1
        return {"seconds": time.perf_counter() - started, "steps": steps, "loss": running_loss / max(1, steps)}


# -------------------------------------------------------------------------------------------------- ours


@contextmanager
def _patched(name: str, wrapper):
    original = getattr(lt, name)
    setattr(lt, name, wrapper(original))
    try:
        yield
    finally:
        setattr(lt, name, original)


def _timed(bucket: dict, key: str, marks: dict | None = None):
    def wrap(fn):
        def inner(*args, **kwargs):
            t0 = time.perf_counter()
            if marks is not None and key not in marks:
                marks[key] = t0
            try:
                return fn(*args, **kwargs)
            finally:
                bucket[key] = bucket.get(key, 0.0) + time.perf_counter() - t0

        return inner

    return wrap


def fit_interleaved(config: dict, dataset, split: Split, between_epochs, records: list[dict]) -> list[dict]:
    """``lgeseg.train.fit`` for ``config``'s epochs in a fresh folder, each epoch cut into its parts.

    ``between_epochs()`` runs in the ``on_epoch`` callback, outside the epoch's clock: the reference's
    repetitions run there, so the two sides strictly alternate and both keep their model between epochs.
    """
    spent: dict[str, float] = {}
    marks: dict[str, float] = {}

    def on_epoch(stats):
        end = time.perf_counter()
        epoch_start = end - stats.seconds  # on_epoch runs right after the epoch's clock stops
        train_loop = marks["validate"] - epoch_start  # ends after the per-epoch finite check (a host sync)
        records.append(
            {
                "seconds": train_loop,
                "epoch_seconds": stats.seconds,
                "validate": spent.get("validate", 0.0),
                "checkpoint": spent.get("checkpoint", 0.0),
                "history": spent.get("history", 0.0),
                "other": max(0.0, stats.seconds - train_loop - sum(spent.values())),
                "loss": stats.train_loss,
            }
        )
        spent.clear()
        marks.clear()
        between_epochs(stats.epoch)

    with (
        tempfile.TemporaryDirectory(prefix="lgeseg-bench-") as tmp,
        _patched("_validate", _timed(spent, "validate", marks)),
        _patched("_save_atomic", _timed(spent, "checkpoint")),
        _patched("_write_history", _timed(spent, "history")),
    ):
        lt.fit(config, dataset, split, tmp, on_epoch=on_epoch)
    return records


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def hot_loop_extras(images, masks, device, batch, steps, augment, precision, repeats=3) -> dict:
    """Seconds per step of ``augment_batch`` and of the loop's accuracy accumulation, synchronised."""
    x_all = torch.from_numpy(images).unsqueeze(1).to(device)
    y_all = torch.from_numpy(masks).to(device)
    generator = torch.Generator(device=device)
    generator.manual_seed(0)
    n = len(x_all)
    logits = torch.randn(
        batch, 3, *images.shape[1:], device=device, dtype=torch.bfloat16 if precision == "bf16" else torch.float32
    )
    y = torch.randint(0, 3, (batch, *images.shape[1:]), device=device)
    best_aug, best_acc = math.inf, math.inf
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            idx = torch.randint(0, n, (batch,), generator=generator, device=device)
            lt.augment_batch(x_all[idx], y_all[idx], generator, augment["reflect"], augment["translate"])
        _sync(device)
        best_aug = min(best_aug, (time.perf_counter() - t0) / steps)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        counted = torch.zeros((), device=device, dtype=torch.int64)
        t0 = time.perf_counter()
        for _ in range(steps):
            correct += (lt.predicted_classes(logits.detach()) == y).sum()  # as fit's loop does
            counted += (y != IGNORE_INDEX).sum()
        _sync(device)
        best_acc = min(best_acc, (time.perf_counter() - t0) / steps)
    return {"augment_per_step": best_aug, "metric_per_step": best_acc}


# ------------------------------------------------------------------------------------------------ driver


def subset_split(split: Split, train_images: int) -> Split:
    """The first ``train_images`` training images and validation images in the split's own ratio."""
    ratio = len(split.val) / max(1, len(split.train))
    n_val = max(1, min(len(split.val), round(train_images * ratio)))
    return Split(
        train=split.train[:train_images],
        val=split.val[:n_val],
        test=split.test,
        by=split.by,
        seed=split.seed,
        fractions=split.fractions,
    )


def default_steps(device: torch.device, width: int) -> int:
    if device.type == "cuda":
        return 26  # one full epoch of emidec-lge-128's training split at batch 16
    return 8 if width <= 16 else 2


def count_flops(width: int, depth: int, image_shape, batch: int) -> float:
    """Training FLOPs per image, counted on the meta device (no compute)."""
    model = UNet(width=width, depth=depth, image_size=tuple(image_shape)).to("meta")
    return _common.train_flops_per_image(model, tuple(image_shape), batch, "meta")


def bench_width(args, dataset, split, device, width: int) -> dict:
    batch = args.batch_size
    steps = args.steps or default_steps(device, width)
    if steps * batch > len(split.train):  # e.g. the phantom (157 training images) instead of emidec (423)
        print(
            f"width {width}: {steps} steps x batch {batch} is more than the {len(split.train)} training images; "
            f"using {len(split.train) // batch} steps per epoch",
            file=sys.stderr,
        )
        steps = len(split.train) // batch
    config = run_config(
        {
            "data": None,
            "seed": 0,
            "split": {"train": 0.6, "val": 0.2, "test": 0.2, "seed": 0},
            "model": {"width": width, "depth": args.depth},
            "train": {
                "epochs": 1,
                "batch_size": batch,
                "learning_rate": args.lr,
                "l2": args.l2,
                "device": str(device),
                "precision": args.precision,
                "channels_last": args.channels_last,
                "augment": {"reflect": True, "translate": 10},
            },
        }
    )
    options = config["train"]
    auto_bf16 = options["precision"] == "auto" and lt.native_bf16(device)
    precision = "bf16" if options["precision"] == "bf16" or auto_bf16 else "fp32"
    channels_last = options["channels_last"] is True or (options["channels_last"] == "auto" and device.type == "cuda")
    timed = subset_split(split, steps * batch)
    config["train"]["epochs"] = args.warmup_epochs + args.reps
    reference = Reference(
        dataset.images[timed.train],
        dataset.masks[timed.train],
        width,
        args.depth,
        device,
        batch,
        args.lr,
        args.l2,
        options["augment"],
        args.ref_workers,
    )
    ref_all: list[dict] = []

    def reference_epoch(epoch: int) -> None:
        ref_all.append(reference.epoch())
        label = "warm-up" if epoch <= args.warmup_epochs else f"rep {epoch - args.warmup_epochs}/{args.reps}"
        print(
            f"width {width}: {label}: ours {ours_all[-1]['seconds']:.3f}s ref {ref_all[-1]['seconds']:.3f}s "
            f"for {steps} steps",
            file=sys.stderr,
            flush=True,
        )

    ours_all: list[dict] = []
    fit_interleaved(config, dataset, timed, reference_epoch, ours_all)
    ours_runs, ref_runs = ours_all[args.warmup_epochs :], ref_all[args.warmup_epochs :]

    images_per_rep = steps * batch
    ours_s = statistics.median(r["seconds"] for r in ours_runs)
    ref_s = statistics.median(r["seconds"] for r in ref_runs)
    paired = [r["seconds"] / o["seconds"] for o, r in zip(ours_runs, ref_runs)]
    flops = count_flops(width, args.depth, dataset.images.shape[1:], batch)
    ours_ips, ref_ips = images_per_rep / ours_s, images_per_rep / ref_s
    peak = _common.bf16_peak(torch.cuda.get_device_name(device)) if device.type == "cuda" else None

    # Epoch-level overheads, projected to a full epoch of the whole split (fixed costs stay fixed).
    extras = hot_loop_extras(
        dataset.images[timed.train],
        dataset.masks[timed.train],
        device,
        batch,
        min(steps, 10),
        options["augment"],
        precision,
    )
    full_steps = len(split.train) // batch
    per_step = ours_s / steps
    val_per_image = statistics.median(r["validate"] for r in ours_runs) / len(timed.val)
    fixed = {k: statistics.median(r[k] for r in ours_runs) for k in ("checkpoint", "history", "other")}
    parts = {
        "augmentation": extras["augment_per_step"] * full_steps,
        "metric_accumulation": extras["metric_per_step"] * full_steps,
        "validation": val_per_image * len(split.val),
        "checkpoint": fixed["checkpoint"],
        "history_csv": fixed["history"],
        "other_epoch_end": fixed["other"],
    }
    full_epoch = per_step * full_steps + parts["validation"] + sum(fixed.values())
    overhead = {k: v / full_epoch for k, v in parts.items()}
    measured_epoch = statistics.median(r["epoch_seconds"] for r in ours_runs)
    return {
        "width": width,
        "device": str(device),
        "precision": precision,
        "channels_last": channels_last,
        "batch": batch,
        "steps_per_rep": steps,
        "reps": args.reps,
        "warmup_epochs": args.warmup_epochs,
        "params": sum(p.numel() for p in reference.model.parameters()),
        "gflop_per_image": flops / 1e9,
        "ours_images_per_s": ours_ips,
        "ref_images_per_s": ref_ips,
        "speedup": ours_ips / ref_ips,
        "speedup_paired_median": statistics.median(paired),
        "speedup_paired_min": min(paired),
        "speedup_paired_max": max(paired),
        "ours_tflops": ours_ips * flops / 1e12,
        "ref_tflops": ref_ips * flops / 1e12,
        "bf16_peak_tflops": peak,
        "ours_peak_fraction": (ours_ips * flops / 1e12 / peak) if peak else None,
        "ours_epoch_images_per_s": images_per_rep / measured_epoch,
        "ours_runs": ours_runs,
        "ref_runs": ref_runs,
        "hot_loop_extras_per_step_s": extras,
        "full_epoch": {
            "train_steps": full_steps,
            "val_images": len(split.val),
            "projected_seconds": full_epoch,
            "parts_seconds": parts,
        },
        "overhead_fraction": overhead,
        "overhead_total": sum(overhead.values()),
        "overhead_total_without_validation": sum(v for k, v in overhead.items() if k != "validation"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data",
        default=_common.default_data(),
        help='dataset folder (default: ../shared/data/emidec-lge-128 if present, else the phantom; "" = phantom)',
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--widths", default=None, help="comma list (default: 8,64 on CPU, 64 on CUDA)")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="training steps per repetition (default: CPU 8 at width<=16 else 2; CUDA 26)",
    )
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions per side, alternating")
    parser.add_argument("--warmup-epochs", type=int, default=1, help="untimed epochs (of --steps) per side first")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--l2", type=float, default=5e-4)
    parser.add_argument(
        "--precision", default="auto", choices=("auto", "fp32", "bf16"), help="ours only; the reference is always fp32"
    )
    parser.add_argument(
        "--channels-last",
        default="auto",
        type=lambda s: {"true": True, "false": False}.get(s, s),
        help="ours only: auto | true | false",
    )
    parser.add_argument("--ref-workers", type=int, default=0, help="DataLoader workers of the reference")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--json", default=None, help="output JSON (default: bench/results/train_throughput_<dev>.json)")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = lt.resolve_device(args.device)
    widths = [int(w) for w in (args.widths or ("64" if device.type == "cuda" else "8,64")).split(",")]
    dataset = load_dataset(args.data or None)  # "" = the synthetic phantom
    split = split_dataset(dataset, 0.6, 0.2, 0.2, seed=0)
    print(
        f"data: {dataset.root} ({'SYNTHETIC phantom' if dataset.synthetic else 'real'}), "
        f"{len(dataset.files)} images, train {len(split.train)} / val {len(split.val)}; device {device}",
        file=sys.stderr,
    )
    results = [bench_width(args, dataset, split, device, w) for w in widths]

    out = {
        "benchmark": "train_throughput",
        "machine": _common.machine(str(device)),
        "data": str(dataset.root),
        "synthetic": dataset.synthetic,
        "command": sys.argv,
        "results": results,
    }
    path = _common.write_json(out, args.json, f"train_throughput_{device.type}.json")
    print(
        _common.table(
            results,
            [
                ("width", "width"),
                ("device", "device"),
                ("precision", "prec"),
                ("steps_per_rep", "steps/rep"),
                ("reps", "reps"),
                ("gflop_per_image", "GFLOP/img"),
                ("ours_images_per_s", "ours img/s"),
                ("ref_images_per_s", "ref img/s"),
                ("speedup", "speedup"),
                ("speedup_paired_median", "paired med"),
                ("ours_tflops", "ours TFLOP/s"),
                ("ours_peak_fraction", "of bf16 peak"),
                ("ours_epoch_images_per_s", "ours epoch img/s"),
            ],
        )
    )
    print()
    rows = [
        {
            "width": r["width"],
            **{k: 100 * v for k, v in r["overhead_fraction"].items()},
            "total": 100 * r["overhead_total"],
            "total_no_val": 100 * r["overhead_total_without_validation"],
            "epoch_s": r["full_epoch"]["projected_seconds"],
        }
        for r in results
    ]
    print(
        "epoch-level overheads, % of a projected full epoch "
        f"({results[0]['full_epoch']['train_steps']} steps + {results[0]['full_epoch']['val_images']} val images):"
    )
    print(
        _common.table(
            rows,
            [
                ("width", "width"),
                ("augmentation", "augment %"),
                ("metric_accumulation", "metric acc %"),
                ("validation", "validation %"),
                ("checkpoint", "checkpoint %"),
                ("history_csv", "history %"),
                ("other_epoch_end", "other %"),
                ("total", "total %"),
                ("total_no_val", "total w/o val %"),
                ("epoch_s", "epoch s"),
            ],
        )
    )
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
