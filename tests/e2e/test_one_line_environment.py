"""One line, never a traceback, for what a shared machine puts in the way: a long ``TMPDIR`` (ray#7945),
``RAY_ADDRESS`` in the environment (dead, ``auto`` with no cluster, a live cluster), ``--num-cpus`` below 1,
and a dashboard port that cannot be had (busy, out of range, an address not of this machine; optuna#5030).

The grid commands run as real processes (a fresh Python without Ray), as a user starts them."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
from test_cluster import two_nodes  # noqa: F401 - a fixture

ROOT = Path(__file__).resolve().parents[2]


def _grid(
    data_dir: Path, out: Path, *extra: str, env: dict[str, str] | None = None, prefix: list[str] | None = None
) -> subprocess.CompletedProcess:
    """``grid`` asking for a GPU: it fails right after Ray is up (or joined), in one line, without training."""
    command = [*(prefix or []), sys.executable, "-m", "hpo.run", "grid", "--data", str(data_dir), "--out", str(out)]
    command += ["--set", "resources.cpu=1", "--set", "resources.gpu=1", "--set", "train.batch_size=4", *extra]
    clean = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_TMPDIR")}
    return subprocess.run(
        command,
        cwd=ROOT,
        env={**clean, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _one_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0], result.stderr
    return errors[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("variable", ["TMPDIR", "RAY_TMPDIR"])
def test_a_long_temp_dir_gets_a_short_ray_temp_dir_and_says_where(tiny_data_dir, tmp_path, variable):
    long_dir = tmp_path / ("x" * 60) / ("y" * 60)
    long_dir.mkdir(parents=True)
    result = _grid(tiny_data_dir, tmp_path / "study", "--num-cpus", "1", env={variable: str(long_dir)})
    line = _one_error(result)
    assert "resources.gpu" in line  # Ray started: the error is the config's, not the socket path's
    assert f"Ray's temp files go to /tmp/lgeseg-ray-{os.getuid()}" in result.stderr


def test_a_dead_ray_address_in_the_environment_is_one_line(tiny_data_dir, tmp_path):
    address = f"127.0.0.1:{_free_port()}"
    line = _one_error(_grid(tiny_data_dir, tmp_path / "study", env={"RAY_ADDRESS": address}))
    assert line.startswith(f"error: RAY_ADDRESS={address} (from the environment): no Ray cluster answers there")
    assert "unset RAY_ADDRESS" in line
    assert not (tmp_path / "study").exists()


@pytest.mark.slow
def test_ray_address_auto_without_a_cluster_is_one_line(tiny_data_dir, tmp_path):
    # 'auto' joins any Ray cluster whose processes it sees on this machine (another user's too), so the grid
    # runs where it sees none: its own PID namespace (root only) and its own RAY_TMPDIR
    probe = subprocess.run(["unshare", "-p", "-f", "--mount-proc", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot hide this machine's Ray clusters: unshare failed ({probe.stderr.decode().strip()})")
    ray_tmp = Path(tempfile.mkdtemp(prefix="lgeseg-auto-", dir="/tmp"))  # short: Ray's socket paths
    try:
        result = _grid(
            tiny_data_dir,
            tmp_path / "study",
            env={"RAY_ADDRESS": "auto", "RAY_TMPDIR": str(ray_tmp)},
            prefix=["unshare", "-p", "-f", "--mount-proc"],
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    line = _one_error(result)
    assert line.startswith("error: RAY_ADDRESS=auto (from the environment): cannot join the Ray cluster")


@pytest.mark.slow
def test_ray_address_of_a_live_cluster_is_joined_and_said(tiny_data_dir, tmp_path, two_nodes):  # noqa: F811
    result = _grid(tiny_data_dir, tmp_path / "study", env={"RAY_ADDRESS": two_nodes["address"]})
    line = _one_error(result)
    assert "the Ray cluster has 0" in line  # it joined the 2-CPU cluster and found no GPU there
    assert f"warning: RAY_ADDRESS={two_nodes['address']} is set: joining that Ray cluster" in result.stderr


@pytest.mark.parametrize("cpus", ["-1", "0", "-8"])
def test_num_cpus_below_1_is_one_line(tiny_data_dir, tmp_path, one_line_error, cpus):
    argv = ["grid", "--data", str(tiny_data_dir), "--out", str(tmp_path / "s"), "--set", "train.batch_size=4"]
    line = one_line_error([*argv, "--num-cpus", cpus])
    assert line.startswith(
        f"error: --num-cpus must be at least 1 (or left out for all {os.cpu_count()} cores), got {cpus}"
    )


# ------------------------------------------------------------------------------------------ dashboard


@pytest.fixture
def storage(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(storage=url, study_name="demo")
    return url


def _dashboard_error(capsys, argv: list[str]) -> str:
    """Run ``dashboard`` in-process; assert one error line, no banner (ours or bottle's "Listening on")."""
    from hpo.run import main

    assert main(["dashboard", *argv]) == 2
    out, err = capsys.readouterr()
    assert "Listening on" not in out + err and "optuna-dashboard on" not in out and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_a_busy_dashboard_port_is_one_line_without_a_listening_banner(storage, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = _dashboard_error(capsys, ["--storage", storage, "--port", str(port)])
    assert line == (
        f"error: dashboard cannot listen on 127.0.0.1:{port}: the port is in use (another dashboard or "
        f"server?); pick another --port"
    )


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--port", "70000"], "error: --port 70000: a port must be 1-65535"),
        (["--port", "-1"], "error: --port -1: a port must be 1-65535"),
        (["--port", "0"], "error: --port 0: a port must be 1-65535"),
        (["--host", "192.0.2.1"], "192.0.2.1 is not an address of this machine; use 127.0.0.1"),
        (["--host", "no-such-host.invalid"], "error: --host no-such-host.invalid: not a known host name or address"),
    ],
)
def test_a_dashboard_port_that_cannot_be_had_is_one_line(storage, capsys, args, expected):
    if "--host" in args:
        args = [*args, "--port", str(_free_port())]
    assert expected in _dashboard_error(capsys, ["--storage", storage, *args])
