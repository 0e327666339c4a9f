"""A MONAI U-Net trained plainly, outside lgeseg's loop, on the study's split: the yardstick of issue 24.

The field's usual recipe, written as a tutorial would: ``monai.networks.nets.UNet`` (16..256 channels,
strides 2, two residual units, batch norm), ``monai.losses.DiceCELoss`` (one-hot, softmax), Adam 1e-3
without weight decay, fp32, mini-batch 16 reshuffled every epoch, images fed in [0, 1] as they are, left-right
reflection and +-10 px translation whose shifted-in mask pixels are background (``grid_sample`` zero
padding), the last network kept. It trains for ``--seconds`` (or ``--epochs``) and scores the test split
of the study's seed-0 split with :func:`lgeseg.metrics.evaluate`, as ``python -m hpo.run train`` does, so
its MeanIoU compares with a run of the tool on the same network (``--tool`` runs that too, same process,
same thread count, one after the other).

    python bench/plain_monai.py --seconds 200                   # the plain loop only
    python bench/plain_monai.py --epochs 20 --tool               # plain vs the tool, the same epochs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (sets sys.path for lgeseg)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lgeseg.data import load_dataset, split_dataset  # noqa: E402
from lgeseg.metrics import evaluate  # noqa: E402

MONAI_UNET = {"channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2, "norm": "batch"}


def plain_augment(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, translate: float = 10.0):
    """Reflect with p=0.5 and shift by up to +-translate px; shifted-in mask pixels become background."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    y = torch.where(flip[:, None, None], y.flip(-1), y)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * translate
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = -2.0 * shift[:, 0] / w
    theta[:, 1, 2] = -2.0 * shift[:, 1] / h
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = F.grid_sample(y[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0]
    return x, y.long()


def train_plain(dataset, split, seed: int, epochs: int | None, seconds: float | None) -> dict:
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    images = torch.from_numpy(dataset.images).unsqueeze(1).float()
    masks = torch.from_numpy(dataset.masks).long()
    x_train, y_train = images[split.train], masks[split.train]
    model = UNet(spatial_dims=2, in_channels=1, out_channels=len(dataset.labels), **MONAI_UNET)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    started, epoch = time.perf_counter(), 0
    while (epochs is None or epoch < epochs) and (seconds is None or time.perf_counter() - started < seconds):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        for start in range(0, len(order) - 15, 16):
            batch = order[start : start + 16]
            x, y = plain_augment(x_train[batch], y_train[batch], generator)
            loss = loss_fn(model(x), y[:, None])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        epoch += 1
    wall = time.perf_counter() - started
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(images[split.test][i : i + 16]).argmax(1) for i in range(0, len(split.test), 16)])
    files = [dataset.files[i] for i in split.test]
    metrics = evaluate(pred.numpy().astype("uint8"), dataset.masks[split.test], list(dataset.labels), files)
    return {"loop": "plain", "epochs": epoch, "wall_s": round(wall, 1), "metrics": metrics}


def train_tool(data: str, seed: int, epochs: int, out: Path, sets: list[str]) -> dict:
    from hpo.record import Replicate
    from hpo.study_config import load_study_config, run_config_of
    from lgeseg.run import run

    overrides = [
        "model.architecture=monai-unet",
        f"model.monai_unet={json.dumps({**MONAI_UNET, 'dropout': 0.0})}",
        "train.loss=dice-ce",
        "train.learning_rate=1.0e-3",
        "train.batch_size=16",
        "train.lr_schedule=none",
        f"train.epochs={epochs}",
        *sets,
    ]
    study = load_study_config(str(_common.REPO / "study_configs" / "quick-monai.yaml"), overrides, data)
    config = run_config_of(study, {"train.l2": 0.0}, Replicate(seed))
    started = time.perf_counter()
    result = run(config, out)
    return {
        "loop": "tool " + " ".join(sets),
        "epochs": epochs,
        "wall_s": round(time.perf_counter() - started, 1),
        "metrics": result.test_metrics,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=_common.default_data())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--seconds", type=float)
    parser.add_argument(
        "--tool",
        action="append",
        default=[],
        metavar="SETS",
        help="also run the tool on the same network with these space-separated --set overrides ('' = none); repeatable",
    )
    parser.add_argument("--only-tool", action="store_true")
    parser.add_argument("--out", default="/tmp/plain_monai")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    dataset = load_dataset(args.data or None)
    split = split_dataset(dataset, 0.6, 0.2, 0.2, seed=0)
    rows = []
    load = [os.getloadavg()[0]]
    if not args.only_tool:
        rows.append(train_plain(dataset, split, args.seed, args.epochs, args.seconds))
    epochs = args.epochs or rows[0]["epochs"]
    for i, sets in enumerate(args.tool):
        rows.append(train_tool(args.data, args.seed, epochs, Path(args.out) / f"tool{i}", sets.split()))
    load.append(os.getloadavg()[0])
    for row in rows:
        d = row["metrics"]["dataset"]
        iou = {c: round(v["IoU"], 3) for c, v in row["metrics"]["class"].items()}
        print(f"{row['loop']}: {row['epochs']} epochs, {row['wall_s']} s, test MeanIoU {d['MeanIoU']:.3f} {iou}")
    print(f"load average {load[0]:.1f} -> {load[-1]:.1f}, {torch.get_num_threads()} threads")
    _common.write_json({"machine": _common.machine("cpu"), "load": load, "rows": rows}, args.json, "plain_monai")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
