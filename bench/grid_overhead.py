"""Ray Tune + Optuna overhead of ``python -m hpo.run grid`` against the same trials run with lgeseg alone.

Both sides run in a fresh Python process each (so interpreter start, imports and data loading count on
both) with the same study config and the same ``--set`` overrides:

* **grid**: ``python -m hpo.run grid --config <quick> --out <tmp> --no-report --set ...``
* **sequential**: a child process that, for each seed and L2 of the grid, calls
  ``lgeseg.run.run(hpo.study_config.run_config_of(study, {"train.l2": l2}, Replicate(seed)),
  <tmp>/<trial>)`` one after the other, with
  ``torch.set_num_threads(resources.cpu)`` as the Ray trainable does, and on the same device.

Overhead = (grid wall - sequential wall) / grid wall. Modes (each a grid configuration, compared to the
sequential baseline with the same threads per trial):

* ``serial``   ``resources.cpu=<cores>``: one trial at a time with all cores: the fair comparison.
* ``parallel`` ``resources.cpu=1``: as quick.yaml ships, 2 trials at once on 2 cores (1 thread each),
  reported against the all-cores sequential baseline, so it measures packing plus overhead.
* ``gpu-packed`` ``resources.gpu=0.33``: the three L2 trials at once on one GPU, against sequential on the
  same GPU (``--device cuda``).

The retune rule is disabled by default (``retune.target_accuracy=1e-6``, an accuracy every trial reaches at
its check epoch) so both sides run exactly the grid's trials for all epochs; the script checks that the
trials' config hashes and epoch counts match and says whether the histories are identical.

    python bench/grid_overhead.py                          # quick study, 2 epochs, serial + parallel
    python bench/grid_overhead.py --device cuda --modes gpu-packed --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

QUICK = _common.REPO / "study_configs" / "quick.yaml"


def _env() -> dict:
    env = dict(os.environ)
    paths = [str(_common.REPO / "src"), str(_common.REPO)]
    env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def mode_overrides(mode: str, cores: int) -> list[str]:
    if mode == "serial":
        return [f"resources.cpu={cores}", "resources.gpu=0"]
    if mode == "parallel":
        return ["resources.cpu=1", "resources.gpu=0"]
    if mode == "gpu-packed":
        return ["resources.gpu=0.33", "resources.cpu=1"]
    raise SystemExit(f"unknown mode {mode!r} (serial, parallel, gpu-packed)")


def _timed(cmd: list[str], what: str) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``cmd`` in a fresh process from the repository root; its wall time; exit if it failed."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=_common.REPO, env=_env(), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"{what} failed with status {proc.returncode}: {' '.join(cmd)}")
    return proc, wall


def trial_records(root: Path) -> dict[str, dict]:
    """run.json + history of every finished run under ``root``, keyed by config hash."""
    out = {}
    for info_path in sorted(root.rglob("run.json")):
        info = json.loads(info_path.read_text())
        history = (info_path.parent / "history.csv").read_text()
        out[info["config_hash"]] = {
            "l2": info["l2"],
            "epochs_run": info["epochs_run"],
            "device": info["device"],
            "wall_time_s": info["wall_time_s"],
            "history": history,
        }
    return out


def run_grid(config: str, overrides: list[str], data: str | None, out: Path, num_cpus: int | None) -> dict:
    cmd = [sys.executable, "-m", "hpo.run", "grid", "--config", config, "--out", str(out), "--no-report"]
    cmd += [a for o in overrides for a in ("--set", o)]
    if data:
        cmd += ["--data", data]
    if num_cpus:
        cmd += ["--num-cpus", str(num_cpus)]
    proc, wall = _timed(cmd, "grid")
    return {"wall_s": wall, "command": cmd, "stdout_tail": proc.stdout[-2000:]}


def run_sequential(config: str, overrides: list[str], data: str | None, out: Path, device: str) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "_sequential",
        "--config",
        config,
        "--out",
        str(out),
        "--device",
        device,
    ]
    cmd += [a for o in overrides for a in ("--set", o)]
    if data:
        cmd += ["--data", data]
    proc, wall = _timed(cmd, "sequential run")
    inner = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, "command": cmd, **inner}


def sequential_child(args) -> int:
    """Child process: the study's trials one after the other with lgeseg alone."""
    t_start = time.perf_counter()
    import torch

    from hpo.record import Replicate
    from hpo.study_config import load_study_config, run_config_of
    from lgeseg.run import run

    study = load_study_config(args.config, args.overrides, args.data)
    torch.set_num_threads(max(1, int(study["resources"]["cpu"])))
    t_trials = time.perf_counter()
    for seed in study["seeds"]:
        for l2 in study["grid"]["l2"]:
            config = run_config_of(study, {"train.l2": l2}, Replicate(seed))
            # run() reads the data set itself, as each Ray trial does
            run(config, Path(args.out) / f"l2={l2:g}_seed={seed}")
    end = time.perf_counter()
    print(json.dumps({"threads": torch.get_num_threads(), "import_s": t_trials - t_start, "trials_s": end - t_trials}))
    return 0


def compare(grid: dict[str, dict], seq: dict[str, dict]) -> dict:
    same_trials = set(grid) == set(seq) and all(grid[h]["epochs_run"] == seq[h]["epochs_run"] for h in grid)
    identical = same_trials and all(grid[h]["history"] == seq[h]["history"] for h in grid)
    return {
        "same_trials": same_trials,
        "identical_histories": identical,
        "trials": [{"l2": g["l2"], "epochs": g["epochs_run"], "device": g["device"]} for g in grid.values()],
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(QUICK), help="study config (default: study_configs/quick.yaml)")
    parser.add_argument("--data", default=None, help="dataset folder (default: the config's; quick = phantom)")
    parser.add_argument("--epochs", type=int, default=2, help="train.epochs for both sides (quick.yaml: 12)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra override for both sides (repeatable)",
    )
    parser.add_argument("--modes", default="serial,parallel", help="comma list: serial, parallel, gpu-packed")
    parser.add_argument("--device", default="cpu", help="train.device of both sides (cpu | cuda)")
    parser.add_argument("--reps", type=int, default=2, help="alternating repetitions of each side (median)")
    parser.add_argument(
        "--keep-retune",
        action="store_true",
        help="leave the retune rule on (trial counts may then differ between the sides)",
    )
    parser.add_argument("--num-cpus", type=int, default=None, help="Ray --num-cpus (default: all cores)")
    parser.add_argument("--json", default=None, help="output JSON (default: bench/results/grid_overhead.json)")
    if argv and argv[0] == "_sequential":
        parser.add_argument("--out", required=True)
        return sequential_child(parser.parse_args(argv[1:]))
    args = parser.parse_args(argv)

    cores = args.num_cpus or os.cpu_count() or 1
    common = [f"train.epochs={args.epochs}", f"train.device={args.device}"]
    if not args.keep_retune:
        common.append("retune.target_accuracy=1.0e-6")
    common += args.overrides
    rows, details = [], []
    baselines: dict[tuple, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="lgeseg-grid-bench-") as tmp:
        runs = 0
        for mode in args.modes.split(","):
            overrides = common + mode_overrides(mode, cores)
            # The sequential baseline uses all cores per trial on CPU (threads = resources.cpu = cores).
            base_over = common + mode_overrides("serial" if args.device == "cpu" else mode, cores)
            seqs = baselines.setdefault(tuple(base_over), [])
            fresh_baseline = not seqs
            grids, checks = [], []
            for rep in range(args.reps):
                # Alternate the order (sequential first, then grid first, ...) so drifting load hits both.
                order = ("seq", "grid") if rep % 2 == 0 else ("grid", "seq")
                for side in order:
                    runs += 1
                    out = Path(tmp) / f"run-{runs}"
                    if side == "seq" and (fresh_baseline or rep >= len(seqs)):
                        print(
                            f"[{mode} rep {rep + 1}] sequential ({'; '.join(base_over)}) ...",
                            file=sys.stderr,
                            flush=True,
                        )
                        seqs.append(
                            {
                                **run_sequential(args.config, base_over, args.data, out, args.device),
                                "records": trial_records(out),
                            }
                        )
                    elif side == "grid":
                        print(f"[{mode} rep {rep + 1}] grid ({'; '.join(overrides)}) ...", file=sys.stderr, flush=True)
                        grids.append(run_grid(args.config, overrides, args.data, out, args.num_cpus))
                        checks.append(compare(trial_records(out / "trials"), seqs[0]["records"]))
                print(
                    f"  grid {grids[-1]['wall_s']:.1f}s, sequential {seqs[min(rep, len(seqs) - 1)]['wall_s']:.1f}s",
                    file=sys.stderr,
                    flush=True,
                )
            grid_s = statistics.median(g["wall_s"] for g in grids)
            seq_s = statistics.median(q["wall_s"] for q in seqs)
            overhead = (grid_s - seq_s) / grid_s
            rows.append(
                {
                    "mode": mode,
                    "trials": len(checks[0]["trials"]),
                    "epochs": args.epochs,
                    "reps": len(grids),
                    "grid_s": grid_s,
                    "seq_s": seq_s,
                    "seq_threads": seqs[0]["threads"],
                    "overhead_pct": 100 * overhead,
                    "grid_runs": " ".join(f"{g['wall_s']:.0f}" for g in grids),
                    "seq_runs": " ".join(f"{q['wall_s']:.0f}" for q in seqs),
                    "same_trials": all(c["same_trials"] for c in checks),
                    "identical": all(c["identical_histories"] for c in checks),
                }
            )
            details.append(
                {
                    "mode": mode,
                    "overrides": overrides,
                    "baseline_overrides": base_over,
                    "grid": grids,
                    "sequential": [{k: v for k, v in q.items() if k != "records"} for q in seqs],
                    "check": checks,
                }
            )

    out = {
        "benchmark": "grid_overhead",
        "machine": _common.machine(args.device),
        "config": args.config,
        "common_overrides": common,
        "command": [sys.executable] + sys.argv,
        "rows": rows,
        "details": details,
    }
    path = _common.write_json(out, args.json, f"grid_overhead_{args.device.split(':')[0]}.json")
    print(
        _common.table(
            rows,
            [
                ("mode", "mode"),
                ("trials", "trials"),
                ("epochs", "epochs"),
                ("reps", "reps"),
                ("grid_s", "grid wall s"),
                ("seq_s", "sequential wall s"),
                ("grid_runs", "grid runs s"),
                ("seq_runs", "seq runs s"),
                ("seq_threads", "seq threads"),
                ("overhead_pct", "overhead %"),
                ("same_trials", "same trials"),
                ("identical", "identical histories"),
            ],
        )
    )
    print("overhead % = (median grid wall - median sequential wall) / median grid wall; negative = grid faster")
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
