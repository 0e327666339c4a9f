"""A real two-node Ray cluster on this machine, bound to 127.0.0.1, for the cluster tests (and by hand).

    RAY_TMPDIR=$(mktemp -d /tmp/rayXXXX) python tests/e2e/two_node_cluster.py [CPUS_PER_NODE]

starts a head node and one worker node with Ray's own :class:`ray.cluster_utils.Cluster` (two raylets,
each with its own object store), prints one JSON line (``address``, ``head_node_id``, ``worker_node_id``)
and keeps the cluster up until its standard input closes or it gets SIGTERM; then it shuts the cluster
down. SIGUSR1 kills the worker node as a crash would (all its processes, no graceful stop). A separate
``RAY_TMPDIR`` keeps the cluster out of ``/tmp/ray``, where a plain ``ray.init()`` elsewhere on the machine
would otherwise find it and join it.
"""

from __future__ import annotations

import json
import signal
import sys


def main() -> None:
    from ray.cluster_utils import Cluster

    cpus = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    node = {"node_ip_address": "127.0.0.1", "num_cpus": cpus, "object_store_memory": 80 * 1024**2}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        worker = cluster.add_node(**node)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        signal.signal(signal.SIGUSR1, lambda *_: cluster.remove_node(worker, allow_graceful=False))
        print(
            json.dumps(
                {
                    "address": cluster.address,
                    "head_node_id": cluster.head_node.node_id,
                    "worker_node_id": worker.node_id,
                }
            ),
            flush=True,
        )
        sys.stdin.read()  # until the test closes the pipe
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
