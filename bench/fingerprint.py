"""Benchmark :func:`lgeseg.fingerprint.data_fingerprint` on a dataset folder: cold (no cache) and warm.

Cold hashes every image and mask file; warm finds them all in the (size, mtime_ns) cache and only stats
them. Both are compared with reading the PNGs into memory (:func:`lgeseg.data.load_dataset`), the work a
run does anyway:

    python bench/fingerprint.py [--data ../shared/data/emidec-lge-128] [--reps 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from _common import default_data

from lgeseg.data import load_dataset
from lgeseg.fingerprint import data_fingerprint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=default_data(), help="dataset folder (default: the EMIDEC export)")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    dataset = load_dataset(args.data)
    cold, warm, load = [], [], []
    for _ in range(args.reps):
        with tempfile.TemporaryDirectory() as cache:
            os.environ["LGESEG_CACHE"] = cache
            started = time.perf_counter()
            first = data_fingerprint(dataset)
            cold.append(time.perf_counter() - started)
            started = time.perf_counter()
            again = data_fingerprint(dataset)
            warm.append(time.perf_counter() - started)
            assert first == again
        started = time.perf_counter()
        load_dataset(args.data)
        load.append(time.perf_counter() - started)
    files = 2 * len(dataset.files)
    print(f"{dataset.root}: {len(dataset.files)} images + masks ({files} files), median of {args.reps}")
    for name, times in (
        ("fingerprint, cold cache", cold),
        ("fingerprint, warm cache", warm),
        ("load_dataset (reading the PNGs)", load),
    ):
        print(f"  {name:<33} {statistics.median(times) * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
