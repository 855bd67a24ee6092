"""Which local Dask workers a run starts (bigdecon.cluster), in process."""

from __future__ import annotations


def test_worker_choice():
    from bigdecon.cluster import worker_choice

    assert worker_choice(False, "auto") == (False, "cpu", None)  # --no-gpus: CPU workers on the CPU
    assert worker_choice(False, "gpu") == (False, "gpu", None)
    assert worker_choice(None, "cpu") == (False, "cpu", None)  # --device cpu never starts GPU workers
    assert worker_choice(None, "auto", "tcp://h:8786") == (False, "auto", None)  # remote workers decide


def _listening(pids: set[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket listening in these processes."""
    import psutil

    out = set()
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        out |= {(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}
    return out


def _cluster_sockets(**kwargs) -> tuple[set[tuple[str, int]], str]:
    """Listening sockets of a local cluster started by make_client (this process, its workers), and its link."""
    import os

    import psutil

    from bigdecon.cluster import close, make_client

    client, cluster = make_client(workers=1, threads_per_worker=1, memory_limit="1GiB", gpus=False, **kwargs)
    try:
        client.wait_for_workers(1, timeout=60)
        pids = {os.getpid(), *(p.pid for p in psutil.Process().children(recursive=True))}
        return _listening(pids), str(client.dashboard_link)
    finally:
        close(client, cluster)


def test_local_cluster_listens_on_localhost_only():
    """Scheduler, nanny, worker and dashboard of the default local cluster: 127.0.0.1 only (issue 23, item 8)."""
    sockets, link = _cluster_sockets()
    assert len(sockets) >= 3, sockets  # scheduler, dashboard, nanny, worker
    assert {ip for ip, _ in sockets} == {"127.0.0.1"}, sockets
    assert link.startswith("http://127.0.0.1:")


def test_explicit_dashboard_address_wins():
    """--dashboard-address 0.0.0.0:PORT is the user's choice: the dashboard listens there (the rest stays local)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sockets, _ = _cluster_sockets(dashboard_address=f"0.0.0.0:{port}")
    assert ("0.0.0.0", port) in sockets
    assert {ip for ip, p in sockets if p != port} == {"127.0.0.1"}, sockets
