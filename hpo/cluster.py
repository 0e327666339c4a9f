"""Ray for a grid run: start a local instance or join a cluster, and check it can hold one trial.

Both happen before anything is stored, so a cluster that cannot run a trial (an address nobody answers
at, a GPU asked for where there is none) ends the command in seconds with one line and no study to
``--resume``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from lgeseg.errors import UserError


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds on a ``host:port`` nobody listens on; Ray itself retries for minutes."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # 'auto', ray:// client addresses: left to Ray
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UserError(f"--address {address}: no Ray cluster answers there ({exc.strerror or exc})") from None


def start_ray(address: str | None, num_cpus: int | None) -> None:
    """Join the cluster at ``address``, else start a local Ray with ``num_cpus`` CPUs (default: all);
    nothing when Ray is already initialised in this process."""
    import ray

    if address:
        check_reachable(address)
    if ray.is_initialized():
        return
    options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR,
                               "log_to_driver": False, "configure_logging": True}
    if address:
        try:
            ray.init(address=address, **options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UserError(f"--address {address}: cannot join the Ray cluster ({str(exc).splitlines()[0]})") from None
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), object_store_memory=256 * 1024**2, **options)


def check_resources(resources: dict[str, float]) -> None:
    """Fail at once where Ray would leave a trial pending forever."""
    import ray

    cluster = ray.cluster_resources()
    gpus, cpus = cluster.get("GPU", 0.0), cluster.get("CPU", 0.0)
    if resources["gpu"] > gpus:
        raise UserError(f"config key 'resources.gpu' asks for {resources['gpu']:g} GPU per trial but the Ray "
                        f"cluster has {gpus:g}; use --set resources.gpu=0 to train on CPUs, or join a cluster "
                        f"with GPUs (--address)")
    if resources["cpu"] > cpus:
        raise UserError(f"config key 'resources.cpu' asks for {resources['cpu']:g} CPUs per trial but the Ray "
                        f"cluster has {cpus:g}; lower it with --set resources.cpu=N")
