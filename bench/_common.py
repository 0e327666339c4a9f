"""Helpers shared by the benchmarks in ``bench/``: data, machine description, FLOPs, tables, JSON."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "emidec-lge-128"

for _p in (str(REPO / "src"), str(REPO)):  # run as `python bench/x.py` without installing
    if _p not in sys.path:
        sys.path.insert(0, _p)

#: Dense bf16 tensor-core peak in TFLOP/s (no sparsity), matched by substring of the CUDA device name.
BF16_PEAK_TFLOPS = [
    ("H200", 989.0),
    ("H100 SXM", 989.0),
    ("H100 80GB HBM3", 989.0),  # the SXM part reports this name
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("A100", 312.0),
]


def default_data() -> str | None:
    """``../shared/data/emidec-lge-128`` when present, else None (the synthetic phantom)."""
    return str(DEFAULT_DATA) if (DEFAULT_DATA / "images").is_dir() else None


def bf16_peak(device_name: str) -> float | None:
    for key, peak in BF16_PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return peak
    return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(device: str | None = None) -> dict:
    import torch

    info = {
        "date": _dt.date.today().isoformat(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        info["load_avg_1m"] = os.getloadavg()[0]
    except OSError:
        pass
    if device and device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info


def train_flops_per_image(
    model, image_shape: tuple[int, int], batch: int, device, precision: str = "fp32", channels_last: bool = False
) -> float:
    """FLOPs of one forward + backward per image (FlopCounterMode: 2 per multiply-add, convs and matmuls)."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.rand(batch, 1, *image_shape, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 3, (batch, *image_shape), device=device)
    model.train()
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if precision == "bf16" else _null()
    with FlopCounterMode(display=False) as counter:
        with autocast:
            logits = model(x)
        F.cross_entropy(logits.float(), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """Plain text table; ``columns`` are (key, header); floats with 3 significant decimals."""

    def fmt(v) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    grid = [[h for _, h in columns]] + [[fmt(r.get(k)) for k, _ in columns] for r in rows]
    widths = [max(len(row[i]) for row in grid) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in grid]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(obj: dict, path: str | Path | None, default_name: str) -> Path:
    path = Path(path) if path else RESULTS / default_name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, default=str) + "\n")
    return path
