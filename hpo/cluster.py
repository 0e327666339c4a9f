"""Ray for a grid run: start a local instance or join a cluster, and check it can hold one trial.

Both happen before anything is stored, so a cluster that cannot run a trial (an address nobody answers
at, a GPU asked for where there is none) ends the command in seconds with one line and no study to
``--resume``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

from lgeseg.errors import ConfigError, UserError

_log = logging.getLogger(__name__)

#: Longest AF_UNIX socket path Linux takes (sun_path is 108 bytes with the final NUL); Ray checks the same.
SOCKET_PATH_MAX = 107
#: The longest socket path Ray makes below its temp dir: ``/ray/session_<date>_<time>_<us>_<pid>/sockets/
#: plasma_store.<n>`` (a 7-digit pid, a 2-digit counter).
RAY_SOCKET_SUFFIX = len("/ray/session_2026-12-01_21-39-19_936856_1234567/sockets/plasma_store.10")


def _option(address: str, from_env: bool) -> str:
    return f"RAY_ADDRESS={address} (from the environment)" if from_env else f"--address {address}"


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``host:port`` address; None for 'auto' and ray:// client addresses (left to Ray)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return None
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout: float = 5.0, from_env: bool = False) -> None:
    """Fail in seconds on a ``host:port`` nobody listens on; Ray itself retries for minutes."""
    import socket

    if _host_port(address) is None:
        return
    try:
        socket.create_connection(_host_port(address), timeout=timeout).close()
    except OSError as exc:
        hint = "; unset RAY_ADDRESS to start a local Ray" if from_env else ""
        raise UserError(
            f"{_option(address, from_env)}: no Ray cluster answers there ({exc.strerror or exc}){hint}"
        ) from None


def short_temp_dir() -> str | None:
    """A Ray temp dir short enough for Ray's AF_UNIX sockets, or None when Ray's default one is (ray#7945).

    Ray puts its sockets below ``$RAY_TMPDIR``, else ``$TMPDIR``, else ``/tmp``; a long ``TMPDIR`` (as
    batch systems set per job) makes them longer than :data:`SOCKET_PATH_MAX` bytes and ``ray.init`` fails
    with a traceback. Then ``/tmp/lgeseg-ray-<uid>`` is used, and a warning says so.
    """
    from ray._common.utils import get_default_system_temp_dir

    base = get_default_system_temp_dir()
    if len(base.encode()) + RAY_SOCKET_SUFFIX <= SOCKET_PATH_MAX:
        return None
    short = f"/tmp/lgeseg-ray-{os.getuid()}"
    _log.warning(
        "Ray's temp dir below %s would give socket paths longer than the %d bytes AF_UNIX allows: Ray's temp "
        "files go to %s instead (set RAY_TMPDIR to choose another short folder)",
        base,
        SOCKET_PATH_MAX,
        short,
    )
    return short


#: Seconds a join of ``--address`` may take before the driver gives up with one line (Ray retries forever);
#: ``$LGESEG_RAY_JOIN_TIMEOUT_S`` overrides it.
JOIN_TIMEOUT_S = 60.0


def join_loopback_cluster(address: str) -> None:
    """Make Ray connect to a loopback ``address`` as given when the cluster listens on loopback only.

    Ray replaces a loopback host by the machine's own address before connecting (a cluster is assumed to
    span machines), so a cluster started on 127.0.0.1 (``ray.cluster_utils.Cluster``, ``ray start --head
    --node-ip-address=127.0.0.1``) is never reached and ``ray.init`` retries forever. Such a cluster can
    only be on this machine, so when the rewritten address does not answer, the driver takes loopback as
    its own node address, as Ray itself does where multi-node clusters are switched off.
    """
    import socket

    from ray._private import ray_constants, services

    if _host_port(address) is None:
        return
    target = services.canonicalize_bootstrap_address(address)  # differs from address for loopback only
    if target is None or target == address:
        return
    try:
        socket.create_connection(_host_port(target), timeout=5).close()
    except OSError:
        ray_constants.ENABLE_RAY_CLUSTER = False  # read on every call of services.get_node_ip_address


def join_deadline(address: str, from_env: bool = False) -> threading.Timer:
    """A started timer that ends the process with one ``error:`` line if the join is not cancelled in time.

    ``ray.init`` blocks in Ray's C++ client, out of reach of exceptions and signals, so only ending the
    process bounds it. Nothing has been stored when the join runs, so nothing is lost.
    """
    text = os.environ.get("LGESEG_RAY_JOIN_TIMEOUT_S", "")
    try:
        timeout = float(text) if text else JOIN_TIMEOUT_S
    except ValueError:
        raise UserError(f"LGESEG_RAY_JOIN_TIMEOUT_S must be a number of seconds, got {text!r}") from None

    def give_up() -> None:
        print(
            f"error: {_option(address, from_env)}: could not join the Ray cluster within {timeout:g} s (Ray's "
            f"client got no answer from the cluster there)",
            file=sys.stderr,
            flush=True,
        )
        os._exit(2)

    timer = threading.Timer(timeout, give_up)
    timer.daemon = True
    timer.start()
    return timer


def start_ray(address: str | None, num_cpus: int | None) -> None:
    """Join the cluster at ``address`` (else at ``$RAY_ADDRESS``, saying so), else start a local Ray with
    ``num_cpus`` CPUs (default: all) and a temp dir short enough for its sockets (:func:`short_temp_dir`);
    nothing when Ray is already initialised in this process.

    Raises:
        UserError: ``num_cpus`` below 1, an address nobody answers at, a cluster that cannot be joined; one
            line naming the option or the environment variable.
    """
    import ray

    if num_cpus is not None and num_cpus < 1:
        raise UserError(f"--num-cpus must be at least 1 (or left out for all {os.cpu_count()} cores), got {num_cpus}")
    from_env = False
    if not address and os.environ.get("RAY_ADDRESS"):
        address, from_env = os.environ["RAY_ADDRESS"].strip(), True
        _log.warning("RAY_ADDRESS=%s is set: joining that Ray cluster (unset it to start a local Ray)", address)
    if address:
        check_reachable(address, from_env=from_env)
        join_loopback_cluster(address)
    if ray.is_initialized():
        return
    options: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": logging.ERROR,
        "log_to_driver": False,
        "configure_logging": True,
    }
    if address:
        deadline = join_deadline(address, from_env)
        try:
            ray.init(address=address, **options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UserError(
                f"{_option(address, from_env)}: cannot join the Ray cluster ({str(exc).splitlines()[0]})"
            ) from None
        finally:
            deadline.cancel()
    else:
        temp_dir = short_temp_dir()
        if temp_dir is not None:
            options["_temp_dir"] = temp_dir
        ray.init(num_cpus=num_cpus or os.cpu_count(), object_store_memory=256 * 1024**2, **options)


def check_device(resources: dict[str, float], device: str) -> None:
    """Refuse ``train.device: cuda`` (or ``cuda:N``) with ``resources.gpu: 0``: Ray hides every GPU from a trial
    that reserved none (it empties ``CUDA_VISIBLE_DEVICES``, unless ``RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES``
    is set), so every trial would fail on any machine.

    Raises:
        ConfigError: naming both keys.
    """
    hidden = not os.environ.get("RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES")
    if resources["gpu"] == 0 and device.startswith("cuda") and hidden:
        raise ConfigError(
            f"config key 'train.device' is {device!r} but resources.gpu is 0: Ray gives such a trial no GPU, so "
            f"every trial would fail; set resources.gpu (e.g. 1, or 0.5 to share a card) or train.device: auto"
        )


def check_resources(resources: dict[str, float]) -> None:
    """Fail at once where Ray would leave a trial pending forever."""
    import ray

    cluster = ray.cluster_resources()
    gpus, cpus = cluster.get("GPU", 0.0), cluster.get("CPU", 0.0)
    if resources["gpu"] > gpus:
        raise UserError(
            f"config key 'resources.gpu' asks for {resources['gpu']:g} GPU per trial but the Ray "
            f"cluster has {gpus:g}; use --set resources.gpu=0 to train on CPUs, or join a cluster "
            f"with GPUs (--address)"
        )
    if resources["cpu"] > cpus:
        raise UserError(
            f"config key 'resources.cpu' asks for {resources['cpu']:g} CPUs per trial but the Ray "
            f"cluster has {cpus:g}; lower it with --set resources.cpu=N"
        )
