"""The quick study's grid, today's config against the new one, side by side in one run (issue 24).

Each config runs as the README's command does, ``python -m hpo.run grid --config <yaml> --data <data>``
(fresh process, its own study folder and SQLite database under a temporary folder, ``--no-report``
unless ``--report``), one after the other and alternating over ``--reps``, so a shared machine's load
falls on both alike; ``uptime``'s load average is recorded before and after each. The baseline is a
config file as it was at a git revision (``--baseline-rev``, default the commit before issue 24), run on
today's code: every option issue 24 added defaults to the old behaviour, so that is today's study.

For every trial the script reads the run's ``metrics.json`` and reports test MeanIoU and the class IoUs;
per config and seed, the best trial (highest test MeanIoU) is the study's answer. Seeds come from
``--seeds`` (``--set seeds=[...]`` for both configs: one grid per seed, each timed on its own).

    python bench/quick_grid.py                                    # seed 0, one rep each
    python bench/quick_grid.py --seeds 0,1,2 --new-only           # the new config's grid for three seeds
    python bench/quick_grid.py --new study_configs/quick-monai.yaml --baseline-rev HEAD~0 --seeds 0

Writes ``bench/results/quick_grid.json`` (or ``--json``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

#: The last commit before issue 24: its study_configs/quick.yaml is "today's" quick study.
BASELINE_REV = "d5d5804"


def _env() -> dict:
    env = dict(os.environ)
    paths = [str(_common.REPO / "src"), str(_common.REPO)]
    env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def run_grid(config: Path, data: str | None, out: Path, seed: int, report: bool, sets: list[str] = ()) -> dict:
    """One ``grid`` command in a fresh process; wall time, load and every trial's test metrics."""
    cmd = [sys.executable, "-m", "hpo.run", "grid", "--config", str(config), "--out", str(out)]
    cmd += ["--set", f"seeds=[{seed}]"] + [arg for value in sets for arg in ("--set", value)]
    cmd += (["--data", data] if data else []) + ([] if report else ["--no-report"])
    load_before = uptime()
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=_common.REPO, env=_env(), capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"grid failed with status {proc.returncode}: {' '.join(cmd)}")
    trials = []
    for path in sorted(out.rglob("metrics.json")):
        if path.parent.name == "predictions":
            continue
        metrics = json.loads(path.read_text())
        info = json.loads((path.parent / "run.json").read_text())
        config_yaml = (path.parent / "config.yaml").read_text()
        l2 = next((line.split(":", 1)[1].strip() for line in config_yaml.splitlines() if "  l2:" in line), "?")
        trials.append(
            {
                "trial": path.parent.name,
                "l2": l2,
                "epochs": info.get("epochs_run"),
                "wall_s": info.get("wall_time_s"),
                "MeanIoU": metrics["dataset"]["MeanIoU"],
                **{f"IoU_{c}": v["IoU"] for c, v in metrics["class"].items()},
            }
        )
    best = max(trials, key=lambda t: t["MeanIoU"]) if trials else None
    return {
        "config": str(config),
        "seed": seed,
        "wall_s": round(wall, 1),
        "load_before": load_before,
        "load_after": uptime(),
        "trials": trials,
        "best": best,
        "command": " ".join(cmd),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=_common.default_data(), help="dataset folder ('' = the phantom)")
    parser.add_argument("--new", default="study_configs/quick.yaml", help="the new config (default: %(default)s)")
    parser.add_argument("--baseline", default="study_configs/quick.yaml", help="the baseline config's path in git")
    parser.add_argument("--baseline-rev", default=BASELINE_REV, help="git revision of the baseline config")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, one grid each (default: 0)")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--new-only", action="store_true", help="skip the baseline")
    parser.add_argument("--report", action="store_true", help="let each grid write its HTML report too")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for both configs")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    data = args.data or None
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory(prefix="quick_grid_") as tmp:
        tmp = Path(tmp)
        baseline = tmp / "baseline.yaml"
        if not args.new_only:
            text = subprocess.run(
                ["git", "show", f"{args.baseline_rev}:{args.baseline}"],
                cwd=_common.REPO,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            baseline.write_text(text)
        configs = [("new", _common.REPO / args.new)] + ([] if args.new_only else [("today", baseline)])
        runs = []
        for rep in range(args.reps):
            for seed in seeds:
                for label, config in configs if rep % 2 == 0 else configs[::-1]:
                    out = tmp / f"{label}-s{seed}-r{rep}"
                    print(f"{label} seed {seed} rep {rep}: {uptime()}", file=sys.stderr, flush=True)
                    runs.append(
                        {"label": label, "rep": rep, **run_grid(config, data, out, seed, args.report, args.set)}
                    )
    rows = []
    for run in runs:
        best = run["best"] or {}
        rows.append(
            {
                "config": run["label"],
                "seed": run["seed"],
                "rep": run["rep"],
                "wall_s": run["wall_s"],
                "best_l2": best.get("l2"),
                "MeanIoU": best.get("MeanIoU"),
                **{k: v for k, v in best.items() if k.startswith("IoU_")},
                "load": run["load_before"].split("load average:")[-1].strip(),
            }
        )
    columns = [(k, k) for k in rows[0]] if rows else []
    print(_common.table(rows, columns))
    walls = {label: [r["wall_s"] for r in runs if r["label"] == label] for label, _ in configs}
    if not args.new_only:
        ratio = sum(walls["new"]) / sum(walls["today"])
        print(f"new / today wall time: {ratio:.2f}")
    path = _common.write_json(
        {"machine": _common.machine("cpu"), "baseline_rev": args.baseline_rev, "runs": runs},
        args.json,
        "quick_grid.json",
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
