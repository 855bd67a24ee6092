"""The work folder of an out-of-core run: completion records, statistics, PSFs.

It lives inside the output (``<output>/.bigdecon-work``) and is removed once
the output is complete, so a killed run leaves everything a resumed one needs.
"""

from __future__ import annotations

import functools
import io
import json
import os
import shutil
from typing import Any

import numpy as np

from ..errors import ProcessingError
from ..io.paths import filesystem, join, normalize, read_bytes, write_atomic

__all__ = ["Ledger", "load_array"]


class Ledger:
    """The run's work folder inside the output: completion records, statistics, PSFs.

    A record holds the block's own results (its maximum), so a resumed run
    needs neither the block's data nor a recomputation to finish a reduction.
    Every entry is written with :func:`bigdecon.io.paths.write_atomic`, so it
    exists only once it is complete.

    Examples
    --------
    >>> import tempfile
    >>> ledger = Ledger(tempfile.mkdtemp())
    >>> ledger.record("sparse", "0-4.0-64", {"max": 1.5})
    >>> ledger.done("sparse")
    {'0-4.0-64': {'max': 1.5}}
    """

    def __init__(self, root: str) -> None:
        self.root, self.local = normalize(root)
        self.fs: Any = None if self.local else filesystem(self.root)

    def path(self, *parts: str) -> str:
        """Location of an entry (for the work arrays: local path or URL)."""
        return join(self.root, *parts)

    def record(self, stage: str, key: str, value: dict[str, Any]) -> None:
        """Record that block ``key`` of pass ``stage`` is done, with its results."""
        write_atomic(self.path("ledger", stage, key + ".json"), json.dumps(value).encode())

    def done(self, stage: str) -> dict[str, dict[str, Any]]:
        """The records of pass ``stage``: block key -> results."""
        folder = self.path("ledger", stage)
        if self.local:
            names = [n for n in os.listdir(folder) if n.endswith(".json")] if os.path.isdir(folder) else []
            return {n[: -len(".json")]: json.loads(_read(join(folder, n))) for n in names}
        if not self.fs.exists(folder):
            return {}
        paths = [p for p in self.fs.ls(folder, detail=False) if p.endswith(".json")]
        blobs = self.fs.cat(paths) if paths else {}
        return {p.rsplit("/", 1)[-1][: -len(".json")]: json.loads(b) for p, b in blobs.items()}

    def get(self, key: str) -> dict[str, Any] | None:
        """A stored value (the run's statistics), or None."""
        data = read_bytes(self.path(key + ".json"))
        return None if data is None else json.loads(data)

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Store a JSON value under ``key``."""
        write_atomic(self.path(key + ".json"), json.dumps(value).encode())

    def put_array(self, name: str, array: np.ndarray) -> str:
        """Store an array (a PSF) for the workers; returns where it is."""
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(array))
        path = self.path(name + ".npy")
        write_atomic(path, buf.getvalue())
        return path

    def remove(self) -> None:
        """Delete the work folder (the run is complete)."""
        if self.local:
            shutil.rmtree(self.root, ignore_errors=True)
        elif self.fs.exists(self.root):
            self.fs.rm(self.root, recursive=True)


def _read(path: str) -> bytes:
    data = read_bytes(path)
    if data is None:
        raise ProcessingError(f"work file missing: {path} (was the output deleted during the run?)")
    return data


@functools.lru_cache(maxsize=16)
def load_array(path: str, token: str) -> np.ndarray:
    """An array stored by :meth:`Ledger.put_array`, read once per worker and run (``token``)."""
    return np.load(io.BytesIO(_read(path)))
