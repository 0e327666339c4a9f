"""Speed levers of the quick study's training on the CPU, measured side by side in one run (issue 24).

One training step is ``lgeseg.train``'s: augment a batch, forward, loss, backward, Adam (width-8 U-Net,
mini-batch 16, bf16 autocast where native, channels_last, as ``quick.yaml``). Variants, one after the other
(``--steps`` steps of each, ``--rounds`` times), so the machine's load hits all alike:

* ``eager, 2 threads`` (``quick.yaml``: one trial at a time with ``resources.cpu: 2``);
* ``eager, 1 thread``;
* ``2 trials at once, 1 thread each``: two processes stepping at the same time (``resources.cpu: 1``):
  aggregate images/s of the pair;
* ``compiled, 2 threads`` and ``compiled, 1 thread``: ``torch.compile`` of the network (inductor, CPU);
  the first step, which compiles forward and backward, is timed apart (``first_step_s``; inductor's cache
  makes later compiles of the same graph faster).

Every variant runs in fresh worker processes (data, network, warm-up or compile first, then ``--steps``
timed steps), one variant after the other in each of ``--rounds`` rounds; the table gives medians over
rounds. Also the validation pass (144 images, inference, 2 threads) against one epoch of steps, which gives
what MATLAB's ``ValidationFrequency`` 50 (``train.validation_frequency``) saves over validating every epoch.

    python bench/levers.py                         # ~10 minutes on 2 cores (the compiles take most)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
import torch  # noqa: E402

import lgeseg.train as lt  # noqa: E402
from lgeseg.data import IGNORE_INDEX, load_dataset, split_dataset  # noqa: E402
from lgeseg.losses import build_loss  # noqa: E402
from lgeseg.unet import UNet  # noqa: E402


class Stepper:
    """One network + Adam stepped on the training split, as fit() does."""

    def __init__(self, x_train, y_train, width: int, batch: int, compiled: bool = False):
        torch.manual_seed(0)
        model = UNet(width=width, depth=4, image_size=tuple(x_train.shape[2:]))
        model.normalize.fit(x_train)
        self.model = model.to(memory_format=torch.channels_last)
        self.optimizer = lt.build_optimizer(self.model, 1e-3, 5e-5, "coupled")
        self.net = torch.compile(self.model) if compiled else self.model
        self.loss = build_loss("cross-entropy", IGNORE_INDEX)
        self.x, self.y, self.batch = x_train, y_train, batch
        self.generator = torch.Generator().manual_seed(0)

    def step(self) -> None:
        idx = torch.randint(0, len(self.x), (self.batch,), generator=self.generator)
        x, y = lt.augment_batch(self.x[idx], self.y[idx], self.generator, True, 10)
        lt._train_step(self.net, self.optimizer, self.loss, x, y.long(), "auto", torch.channels_last)


def _data(path: str | None):
    dataset = load_dataset(path or None)
    split = split_dataset(dataset, 0.6, 0.2, 0.2, seed=0)
    images = torch.from_numpy(dataset.images).unsqueeze(1)
    masks = torch.from_numpy(dataset.masks)
    return images[split.train], masks[split.train], images[split.val], masks[split.val]


def worker(args) -> int:
    """``--worker``: build, warm up (compile), then step ``--steps`` times at ``--threads``; print seconds."""
    torch.set_num_threads(args.threads)
    x, y, x_val, y_val = _data(args.data)
    stepper = Stepper(x, y, args.width, args.batch_size, compiled=args.compiled)
    started = time.perf_counter()
    stepper.step()  # oneDNN picks its kernels; torch.compile compiles forward and backward
    first = time.perf_counter() - started
    stepper.step()
    started = time.perf_counter()
    for _ in range(args.steps):
        stepper.step()
    seconds = time.perf_counter() - started
    out = {"seconds": seconds, "first_step_s": first}
    if args.validation:
        val = []
        for _ in range(2):
            started = time.perf_counter()
            lt._validate(stepper.model, x_val.contiguous(memory_format=torch.channels_last), y_val, "auto")
            val.append(time.perf_counter() - started)
        out["validation_s"] = min(val)
        out["steps_per_epoch"] = len(x) // args.batch_size
    print(json.dumps(out))
    return 0


#: name -> (threads, compiled, processes at once)
VARIANTS = {
    "eager, 2 threads (quick.yaml)": (2, False, 1),
    "eager, 1 thread": (1, False, 1),
    "2 trials at once, 1 thread each": (1, False, 2),
    "compiled, 2 threads": (2, True, 1),
    "compiled, 1 thread": (1, True, 1),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=_common.default_data())
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--compiled", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--validation", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    variants = {k: v for k, v in VARIANTS.items() if not (args.no_compile and v[1])}
    base = [sys.executable, __file__, "--worker", "--steps", str(args.steps), "--width", str(args.width)]
    base += ["--batch-size", str(args.batch_size), "--data", args.data or ""]
    load = [os.getloadavg()[0]]
    results: dict[str, list[dict]] = {name: [] for name in variants}
    for r in range(args.rounds):
        for name, (threads, compiled, procs) in variants.items():
            cmd = base + ["--threads", str(threads)] + (["--compiled"] if compiled else [])
            cmd += ["--validation"] if name.startswith("eager, 2") else []
            running = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(procs)]
            outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in running]
            results[name].append({"procs": outs, "load": os.getloadavg()[0]})
            print(
                f"round {r + 1}: {name}: {[round(o['seconds'] / args.steps, 3) for o in outs]} s/step", file=sys.stderr
            )
    load.append(os.getloadavg()[0])
    rows = []
    for name, runs in results.items():
        threads, compiled, procs = variants[name]
        per_step = [max(o["seconds"] for o in run["procs"]) / args.steps for run in runs]
        s = statistics.median(per_step)
        rows.append(
            {
                "lever": name,
                "s_per_step": s,
                "img_per_s": procs * args.batch_size / s,
                "first_step_s": max(o["first_step_s"] for o in runs[0]["procs"]),
            }
        )
    for row in rows:
        row["vs_quick_yaml"] = row["img_per_s"] / rows[0]["img_per_s"]
    first = results[next(iter(results))]
    val_s = min(run["procs"][0]["validation_s"] for run in first)
    steps_per_epoch = first[0]["procs"][0]["steps_per_epoch"]
    epoch_s = steps_per_epoch * rows[0]["s_per_step"]
    every_50 = val_s * steps_per_epoch / 50
    validation = {
        "validation_s": val_s,
        "epoch_steps_s": epoch_s,
        "every_epoch_fraction": val_s / (epoch_s + val_s),
        "every_50_iterations_fraction": every_50 / (epoch_s + every_50),
        "epoch_time_ratio": (epoch_s + every_50) / (epoch_s + val_s),
    }
    print(_common.table(rows, [(k, k) for k in rows[0]]))
    print(
        f"validation {val_s:.2f} s vs {steps_per_epoch} steps {epoch_s:.2f} s: every epoch "
        f"{100 * validation['every_epoch_fraction']:.1f} % of an epoch, every 50 iterations "
        f"{100 * validation['every_50_iterations_fraction']:.1f} % (epoch time x{validation['epoch_time_ratio']:.3f})"
    )
    print(f"load average {load[0]:.1f} -> {load[-1]:.1f}")
    path = _common.write_json(
        {"machine": _common.machine("cpu"), "load": load, "rows": rows, "validation": validation, "runs": results},
        args.json,
        "levers.json",
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
