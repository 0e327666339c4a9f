"""Static figure export (png/svg/pdf) with kaleido in a child process, under a time limit, leaving no
browser behind.

kaleido drives a Chrome/Chromium through choreographer, which starts the browser in a session of its own.
A browser that never answers (Kaleido#134, #110) made ``report --format png`` hang silently for minutes;
the first Ctrl-C did not stop it and the browser went on running. Here the export runs in a child
process; the parent waits at most ``timeout`` seconds (or until Ctrl-C), then kills the child's whole
process tree, the browser included (found through ``/proc`` before anything is killed, since the browser
is not in the child's process group), and raises one line.

Run as ``python -m dashboards.static_export SPEC.json``, it is that child.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from lgeseg.errors import UserError

#: Seconds an export may take before it is stopped (``report --export-timeout``).
EXPORT_TIMEOUT_S = 120.0


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children first), read from ``/proc/<pid>/stat`` (Linux; [] elsewhere)."""
    parent_of: dict[int, int] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # after the command name, which may hold spaces
        parent_of[int(entry.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parent_of.items() if parent in frontier]
        found += children
        frontier = children
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid``, every descendant and the process groups they lead."""
    tree = descendants(pid)
    for target in [pid, *tree]:
        try:
            if os.getpgid(target) == target and target != os.getpgid(0):
                os.killpg(target, signal.SIGKILL)
            else:
                os.kill(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def export_figures(figures: dict, folder: Path, fmt: str, timeout: float | None = None) -> list[Path]:
    """Write each Plotly figure as ``folder/<key>.<fmt>``, 1400 px wide at its layout height.

    Raises:
        UserError: the export did not finish within ``timeout`` s (default :data:`EXPORT_TIMEOUT_S`),
            kaleido/the browser failed, or a file was not written; one line. No browser process is left running
            either way.
        KeyboardInterrupt: after stopping the export and its browser.
    """
    timeout = EXPORT_TIMEOUT_S if timeout is None else timeout
    if not timeout > 0:
        raise UserError(f"--export-timeout must be a positive number of seconds, got {timeout:g}")
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{key}.{fmt}" for key in figures]
    with tempfile.TemporaryDirectory(prefix="lgeseg-export-") as tmp:
        spec = Path(tmp) / "spec.json"
        spec.write_text(
            json.dumps(
                {
                    "format": fmt,
                    "figures": [fig.to_json() for fig in figures.values()],
                    "paths": [str(p) for p in paths],
                    "heights": [fig.layout.height or 600 for fig in figures.values()],
                }
            )
        )
        errors = Path(tmp) / "error.txt"
        child = subprocess.Popen(
            [sys.executable, "-m", "dashboards.static_export", str(spec), str(errors)],
            start_new_session=True,  # Ctrl-C reaches the parent only, which stops the child's tree
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        )
        try:
            code = child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_tree(child.pid)
            child.wait()
            raise UserError(
                f"static export to {folder} did not finish within {timeout:g} s (the browser kaleido "
                f"drives did not answer; it was stopped); raise --export-timeout, or use --format html"
            ) from None
        except BaseException:  # Ctrl-C: stop the export and its browser, then let the interrupt through
            kill_tree(child.pid)
            child.wait()
            raise
        finally:
            _reap(child.pid)
        if code != 0:
            reason = errors.read_text().strip() if errors.exists() else f"exit status {code}"
            raise UserError(f"static export to {folder} failed: {reason.splitlines()[0] if reason else code}")
    missing = [p.name for p in paths if not p.is_file() or p.stat().st_size == 0]
    if missing:  # kaleido ended without an error but did not write them (seen on an overloaded machine)
        raise UserError(
            f"static export to {folder} failed: kaleido wrote no {', '.join(missing)}; run the report again, "
            f"or use --format html"
        )
    return paths


def _reap(pid: int) -> None:
    """Kill what the child left behind even when it ended on its own (a browser it failed to close)."""
    for target in descendants(pid):
        try:
            os.kill(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _child(spec_path: str, error_path: str) -> int:
    import plotly.io as pio

    spec = json.loads(Path(spec_path).read_text())
    try:
        pio.write_images(
            [pio.from_json(text) for text in spec["figures"]],
            spec["paths"],
            format=spec["format"],
            width=1400,
            height=spec["heights"],
        )
    except Exception as exc:  # noqa: BLE001 - kaleido and browser failures all mean "cannot export"
        Path(error_path).write_text(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], sys.argv[2]))
