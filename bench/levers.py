"""Speed levers of the quick study's training on the CPU, measured side by side in one run (issue 24).

One training step is ``lgeseg.train``'s: augment a batch, forward, loss, backward, Adam (width-8 U-Net,
mini-batch 16, bf16 autocast where native, channels_last, as ``quick.yaml``). Variants, in strict rotation
(``--steps`` steps of each, ``--rounds`` times) so the machine's load hits all alike:

* ``eager, 2 threads`` (``quick.yaml``: one trial at a time with ``resources.cpu: 2``);
* ``eager, 1 thread``;
* ``compiled, 2 threads``: ``torch.compile`` of the network (inductor, CPU); its first step, which
  compiles forward and backward, is timed apart (``compile_s``);
* ``2 trials at once, 1 thread each``: two processes stepping at the same time (``resources.cpu: 1``):
  aggregate images/s of the pair, run after the rotation.

Also the validation pass (144 images, inference) against one epoch of steps, which gives what MATLAB's
``ValidationFrequency`` 50 (``train.validation_frequency``) saves over validating every epoch.

    python bench/levers.py                         # ~3-5 minutes on 2 cores
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
    """``--worker``: step for ``--steps`` steps at 1 thread; print the seconds."""
    torch.set_num_threads(1)
    x, y, _, _ = _data(args.data)
    stepper = Stepper(x, y, args.width, args.batch_size)
    stepper.step()
    started = time.perf_counter()
    for _ in range(args.steps):
        stepper.step()
    print(json.dumps({"seconds": time.perf_counter() - started}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=_common.default_data())
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    load = [os.getloadavg()[0]]
    x, y, x_val, y_val = _data(args.data)
    variants = {"eager, 2 threads": (Stepper(x, y, args.width, args.batch_size), 2)}
    variants["eager, 1 thread"] = (Stepper(x, y, args.width, args.batch_size), 1)
    compile_s = None
    if not args.no_compile:
        torch.set_num_threads(2)
        compiled = Stepper(x, y, args.width, args.batch_size, compiled=True)
        started = time.perf_counter()
        compiled.step()
        compile_s = time.perf_counter() - started
        variants["compiled, 2 threads"] = (compiled, 2)
    for stepper, threads in variants.values():  # warm-up
        torch.set_num_threads(threads)
        stepper.step()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.rounds):
        for name, (stepper, threads) in variants.items():
            torch.set_num_threads(threads)
            started = time.perf_counter()
            for _ in range(args.steps):
                stepper.step()
            times[name].append((time.perf_counter() - started) / args.steps)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items()), file=sys.stderr)
    # validation pass vs an epoch of steps (2 threads)
    torch.set_num_threads(2)
    model = variants["eager, 2 threads"][0].model
    val_times = []
    for _ in range(2):
        started = time.perf_counter()
        lt._validate(model, x_val.contiguous(memory_format=torch.channels_last), y_val, "auto")
        val_times.append(time.perf_counter() - started)
    # two trials at once, 1 thread each
    cmd = [sys.executable, __file__, "--worker", "--steps", str(args.steps * args.rounds)]
    cmd += ["--width", str(args.width), "--batch-size", str(args.batch_size)] + (
        ["--data", args.data] if args.data else []
    )
    started = time.perf_counter()
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    worker_s = [json.loads(p.communicate()[0])["seconds"] for p in procs]
    load.append(os.getloadavg()[0])
    steps_per_epoch = len(x) // args.batch_size
    rows = []
    for name, t in times.items():
        s = statistics.median(t)
        rows.append({"lever": name, "s_per_step": s, "img_per_s": args.batch_size / s})
    pair = max(worker_s) / (args.steps * args.rounds)
    rows.append(
        {"lever": "2 trials at once, 1 thread each", "s_per_step": pair, "img_per_s": 2 * args.batch_size / pair}
    )
    base = rows[0]["img_per_s"]
    for row in rows:
        row["vs_2_threads"] = row["img_per_s"] / base
    val_s = min(val_times)
    epoch_s = steps_per_epoch * rows[0]["s_per_step"]
    validation = {
        "validation_s": val_s,
        "epoch_steps_s": epoch_s,
        "every_epoch_fraction": val_s / (epoch_s + val_s),
        # ValidationFrequency 50: steps_per_epoch / 50 validations per epoch
        "every_50_iterations_fraction": val_s * steps_per_epoch / 50 / (epoch_s + val_s * steps_per_epoch / 50),
    }
    print(_common.table(rows, [(k, k) for k in rows[0]]))
    print(f"compile (first compiled step): {compile_s if compile_s is None else round(compile_s, 1)} s")
    print(
        f"validation {val_s:.2f} s vs {steps_per_epoch} steps {epoch_s:.2f} s: every epoch "
        f"{100 * validation['every_epoch_fraction']:.1f} % of an epoch, every 50 iterations "
        f"{100 * validation['every_50_iterations_fraction']:.1f} %"
    )
    print(f"load average {load[0]:.1f} -> {load[-1]:.1f}")
    path = _common.write_json(
        {
            "machine": _common.machine("cpu"),
            "load": load,
            "rows": rows,
            "compile_s": compile_s,
            "validation": validation,
            "times": times,
        },
        args.json,
        "levers.json",
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
