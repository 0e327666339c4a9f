"""CPU (or GPU) speed of one training step of lgeseg's loop against the loop before issue 9, in one run.

One training step = augment a batch on the device, forward, MATLAB's loss, backward, Adam. Variants, each
with its own U-Net and optimizer (same seed, same data), run in strict rotation (a few steps of each, then
the next, repeated), so machine noise hits all of them alike; the table gives the median seconds per step
and the ratio against ``before``:

* ``before``: the loop as it was (fp32, NCHW, whole-pixel translation by index gathering; a copy of that
  augmentation is kept here as the reference);
* ``fp32``, ``fp32+cl``, ``bf16``, ``bf16+cl``: today's loop (``lgeseg.train.augment_batch``: continuous
  translation by ``grid_sample``) at each precision (bf16 = ``torch.autocast``, which oneDNN runs with
  AVX-512 BF16 / AMX where the CPU has them) and memory format (cl = channels_last).

The machine's load average is recorded before and after: on a shared machine, compare ratios, not times.

    python bench/step_speed.py                         # width 8 (quick.yaml), 2 threads
    python bench/step_speed.py --widths 8,16 --threads 1 --rounds 8
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (sets sys.path for lgeseg)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import lgeseg.train as lt  # noqa: E402
from lgeseg.data import load_dataset, split_dataset  # noqa: E402
from lgeseg.unet import UNet  # noqa: E402

VARIANTS = {
    "before": ("fp32", False),
    "fp32": ("fp32", False),
    "fp32+cl": ("fp32", True),
    "bf16": ("bf16", False),
    "bf16+cl": ("bf16", True),
}


def augment_before(images, masks, generator, reflect: bool, translate: int):
    """The loop's augmentation before issue 9: whole-pixel shifts by index gathering (kept as reference)."""
    batch, _, height, width = images.shape
    device = images.device
    if reflect:
        flip = torch.rand(batch, generator=generator, device=device) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        masks = torch.where(flip[:, None, None], masks.flip(-1), masks)
    if translate > 0:
        shift = torch.randint(-translate, translate + 1, (2, batch), generator=generator, device=device)
        rows = torch.arange(height, device=device)[None, :] - shift[0][:, None]
        cols = torch.arange(width, device=device)[None, :] - shift[1][:, None]
        inside = (((rows >= 0) & (rows < height))[:, :, None]) & (((cols >= 0) & (cols < width))[:, None, :])
        r = rows.clamp(0, height - 1)[:, :, None]
        c = cols.clamp(0, width - 1)[:, None, :]
        b = torch.arange(batch, device=device)[:, None, None]
        images = (images[b, 0, r, c] * inside).unsqueeze(1)
        masks = torch.where(inside, masks[b, r, c], torch.full_like(masks[:, :1, :1], lt.IGNORE_INDEX))
    return images, masks


class Variant:
    """One U-Net + Adam trained step by step on random batches of the training split."""

    def __init__(self, name: str, x_train, y_train, width: int, depth: int, batch: int, device, seed: int = 0):
        self.name = name
        self.precision, channels_last = VARIANTS[name]
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.augment = augment_before if name == "before" else lt.augment_batch
        torch.manual_seed(seed)
        self.model = UNet(width=width, depth=depth, image_size=tuple(x_train.shape[2:])).to(device)
        self.model.normalize.fit(x_train)
        self.model = self.model.to(memory_format=self.memory_format)
        self.optimizer = lt.build_optimizer(self.model, 1e-3, 5e-5, "coupled")
        self.x, self.y, self.batch, self.device = x_train, y_train, batch, device
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def step(self) -> float:
        self.model.train()
        idx = torch.randint(0, len(self.x), (self.batch,), generator=self.generator, device=self.device)
        x, y = self.augment(self.x[idx], self.y[idx], self.generator, True, 10)
        y = y.long()
        with lt.autocast(self.device, self.precision):
            logits = self.model(x.contiguous(memory_format=self.memory_format))
        loss = F.cross_entropy(logits.float(), y, ignore_index=lt.IGNORE_INDEX, reduction="sum") / y.numel()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()


def bench_width(args, x_train, y_train, device, width: int) -> list[dict]:
    variants = [
        Variant(name, x_train, y_train, width, args.depth, args.batch_size, device) for name in args.variants.split(",")
    ]
    for variant in variants:  # warm-up: oneDNN picks and caches its kernels
        for _ in range(2):
            variant.step()
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    for r in range(args.rounds):
        for variant in variants:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            for _ in range(args.steps):
                variant.step()
            times[variant.name].append((time.perf_counter() - started) / args.steps)
        print(
            f"width {width}: round {r + 1}/{args.rounds}: "
            + ", ".join(f"{k} {v[-1] * 1000:.0f} ms" for k, v in times.items()),
            file=sys.stderr,
            flush=True,
        )
    before = statistics.median(times[variants[0].name])
    return [
        {
            "width": width,
            "variant": name,
            "ms_per_step": 1000 * statistics.median(t),
            "ms_min": 1000 * min(t),
            "ms_max": 1000 * max(t),
            "speedup": before / statistics.median(t),
            "paired_speedups": [b / s for b, s in zip(times[variants[0].name], t)],
        }
        for name, t in times.items()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data",
        default=_common.default_data(),
        help="dataset folder (default: ../shared/data/emidec-lge-128 if present, else the phantom)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--widths", default="8")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--variants",
        default="before,fp32,fp32+cl,bf16,bf16+cl",
        help=f"comma list, the first is the reference (of {', '.join(VARIANTS)})",
    )
    parser.add_argument("--steps", type=int, default=3, help="steps per variant per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--json", default=None, help="output JSON (default: bench/results/step_speed_<dev>.json)")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = lt.resolve_device(args.device)
    dataset = load_dataset(args.data or None)
    split = split_dataset(dataset, 0.6, 0.2, 0.2, seed=0)
    x_train = torch.from_numpy(dataset.images[split.train]).unsqueeze(1).to(device)
    y_train = torch.from_numpy(dataset.masks[split.train]).to(device)
    load_before = os.getloadavg()
    results = [
        row for w in (int(w) for w in args.widths.split(",")) for row in bench_width(args, x_train, y_train, device, w)
    ]
    load_after = os.getloadavg()
    out = {
        "benchmark": "step_speed",
        "machine": _common.machine(str(device)),
        "data": str(dataset.root),
        "threads": torch.get_num_threads(),
        "load_avg_before": load_before,
        "load_avg_after": load_after,
        "command": sys.argv,
        "results": results,
    }
    path = _common.write_json(out, args.json, f"step_speed_{device.type}.json")
    print(f"threads {torch.get_num_threads()}, load average (1, 5, 15 min) before {load_before}, after {load_after}")
    print(
        _common.table(
            results,
            [
                ("width", "width"),
                ("variant", "variant"),
                ("ms_per_step", "ms/step (median)"),
                ("ms_min", "min"),
                ("ms_max", "max"),
                ("speedup", "vs first"),
            ],
        )
    )
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
