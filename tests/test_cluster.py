"""Which local Dask workers a run starts (bigdecon.cluster), in process."""

from __future__ import annotations


def test_worker_choice():
    from bigdecon.cluster import worker_choice

    assert worker_choice(False, "auto") == (False, "cpu", None)  # --no-gpus: CPU workers on the CPU
    assert worker_choice(False, "gpu") == (False, "gpu", None)
    assert worker_choice(None, "cpu") == (False, "cpu", None)  # --device cpu never starts GPU workers
    assert worker_choice(None, "auto", "tcp://h:8786") == (False, "auto", None)  # remote workers decide
