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
import threading
import time
from typing import Any

import numpy as np

from ..errors import ProcessingError
from ..io.paths import filesystem, join, normalize, read_bytes, remove_files, write_atomic

__all__ = ["Ledger", "RecordBook", "load_array"]

# A pass's records go to disk in batches: at most this many per file, and never
# more than BATCH_SECONDS after the block finished (a kill loses at most that
# much finished work, which a resumed run recomputes).
BATCH_RECORDS = 4096
BATCH_SECONDS = 1.0
# Batch files are merged into the pass's open index segment once there are this
# many and they hold a quarter as many records as the segment (so rewriting it
# costs O(1) per record), or once there are 16 times this many (the most a
# resumed run reads), and at the end of the pass.
COMPACT_BATCHES = 64
COMPACT_GROWTH = 0.25
# A segment this full is closed and the next one opened: the driver holds at most
# this many records (~6 MB), whatever the number of tasks (61 segments at 1e6).
SEGMENT_RECORDS = 16384
_INDEX = "index"  # index.json (before segments), index-<run>-<n>.json
_BATCH = "batch-"


class Ledger:
    """The run's work folder inside the output: completion records, statistics, PSFs.

    A record holds the block's own results (its maximum), so a resumed run
    needs neither the block's data nor a recomputation to finish a reduction.
    Every entry is written with :func:`bigdecon.io.paths.write_atomic`, so it
    exists only once it is complete. A pass's records live in
    ``ledger/<stage>/``: an ``index.json`` (all records, written when a pass
    ends or its batches are merged), batch files (``batch-*.json``, several
    records each, see :class:`RecordBook`) and single records (``<key>.json``,
    :meth:`record`); :meth:`done` merges them all.

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
        return _merge(self._files(stage))

    def _files(self, stage: str) -> dict[str, bytes]:
        """Name -> content of every record file of ``stage``."""
        folder = self.path("ledger", stage)
        if self.local:
            names = [n for n in os.listdir(folder) if n.endswith(".json")] if os.path.isdir(folder) else []
            return {n: _read(join(folder, n)) for n in names}
        if not self.fs.exists(folder):
            return {}
        paths = [p for p in self.fs.ls(folder, detail=False) if p.endswith(".json")]
        blobs = self.fs.cat(paths) if paths else {}
        return {p.rsplit("/", 1)[-1]: b for p, b in blobs.items()}

    def _delete(self, stage: str, names: list[str]) -> None:
        remove_files([self.path("ledger", stage, n) for n in names])

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
        """Delete the work folder (the run is complete); a store's failure raises ``OSError``."""
        _remove_tree(self.root, self.local, self.fs)

    def forget(self, stage: str) -> None:
        """Delete the records of pass ``stage``: its blocks run again."""
        _remove_tree(self.path("ledger", stage), self.local, self.fs)


def _remove_tree(root: str, local: bool, fs: Any) -> None:
    if local:
        try:
            shutil.rmtree(root)
        except FileNotFoundError:
            pass
    elif fs.exists(root):
        fs.rm(root, recursive=True)


class RecordBook:
    """The completion records of one pass, as the driver writes them: in batches.

    :meth:`add` keeps a record in memory and writes the pending ones as one
    batch file (one atomic rename, or one PUT on an object store) once
    ``batch`` are pending or ``seconds`` after the oldest pending one, from a
    timer if no other record arrives. Every ``compact_every`` batches (once
    they hold a quarter as many records as the open segment, or after 16 times
    as many batches), and in :meth:`close`, the records are merged into the
    pass's open index segment (``index-<run>-<n>.json``) and the merged batch
    files are deleted, so a resumed run reads a few files. A segment of
    ``segment`` records is closed: the book keeps no more records than that,
    so the driver's memory does not grow with the pass.

    :attr:`done` holds what earlier runs recorded (read when the book opens).
    A record is only ever added after its block's data was written (the task
    returned), and a kill before a batch is written loses only records, which
    costs a recomputation of those blocks. Overlapping files (a kill between
    writing a segment and deleting the batches) hold identical values.

    Examples
    --------
    >>> import tempfile
    >>> ledger = Ledger(tempfile.mkdtemp())
    >>> book = RecordBook(ledger, "sparse")
    >>> book.add("0-4.0-64", {"max": 1.5})
    >>> book.close()
    >>> ledger.done("sparse")
    {'0-4.0-64': {'max': 1.5}}
    """

    def __init__(
        self,
        ledger: Ledger,
        stage: str,
        *,
        batch: int = BATCH_RECORDS,
        seconds: float = BATCH_SECONDS,
        compact_every: int = COMPACT_BATCHES,
        segment: int = SEGMENT_RECORDS,
    ) -> None:
        self.ledger, self.stage = ledger, stage
        self.batch, self.seconds, self.compact_every, self.segment = batch, seconds, compact_every, segment
        files = ledger._files(stage)
        self.done: dict[str, dict[str, Any]] = _merge(files)
        # Batch files (and single records) not yet in a segment: an earlier run's go into the first one.
        self._merged = [n for n in files if not n.startswith(_INDEX)]
        self._open: dict[str, dict[str, Any]] = _merge({n: files[n] for n in self._merged})
        self._pending: dict[str, dict[str, Any]] = {}
        self._written: list[str] = []  # keys written since the last take_written()
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._token = f"{os.getpid()}-{time.monotonic_ns()}"
        self._seq = 0
        self._segments = 0
        self._last_write = -float("inf")
        self._index_records = 0  # in the open segment at the last compaction
        self._new_records = 0  # in batch files since

    def add(self, key: str, value: dict[str, Any]) -> None:
        """Record that block ``key`` is done, with its results."""
        with self._lock:
            self._open[key] = value
            self._pending[key] = value
            full = len(self._pending) >= self.batch
            if not full and self._timer is None:
                self._timer = threading.Timer(self.seconds, self._flush_from_timer)
                self._timer.daemon = True
                self._timer.start()
        if full:
            self.flush()

    def _flush_from_timer(self) -> None:
        with self._lock:
            self._timer = None
        self.flush()

    def flush(self, after: float = 0.0) -> None:
        """Write the pending records as one batch file (if the last was written at least ``after`` s ago)."""
        with self._lock:
            if time.monotonic() - self._last_write < after:
                return  # the timer, or a later flush, writes them
            pending, self._pending = self._pending, {}
            if not pending:
                return
            name = f"{_BATCH}{self._token}-{self._seq:06d}.json"
            self._seq += 1
            # No fsync: a kill keeps what was written (the page cache survives it), and
            # the blocks' own chunks are not fsync'd either, so it would promise nothing more.
            write_atomic(self.ledger.path("ledger", self.stage, name), json.dumps(pending).encode(), fsync=False)
            self._last_write = time.monotonic()
            self._written.extend(pending)
            self._merged.append(name)
            self._new_records += len(pending)
            files = len(self._merged)
            grown = self._new_records >= COMPACT_GROWTH * self._index_records
            full = len(self._open) >= self.segment
            compact = full or (files >= self.compact_every and (grown or files >= 16 * self.compact_every))
        if compact:
            self.compact()

    def take_written(self) -> list[str]:
        """Keys whose records are on disk (in a batch file) and not yet taken."""
        with self._lock:
            keys, self._written = self._written, []
        return keys

    def compact(self) -> None:
        """Merge the written records into the open segment; delete the merged batch files."""
        with self._lock:
            # Pending records too: their blocks are written.
            name = f"{_INDEX}-{self._token}-{self._segments:04d}.json"
            write_atomic(self.ledger.path("ledger", self.stage, name), json.dumps(self._open).encode())
            self._index_records, self._new_records = len(self._open), 0
            if len(self._open) >= self.segment:  # closed: the next records open a new segment
                self._open, self._index_records = {}, 0
                self._segments += 1
            merged, self._merged = self._merged, []
            self.ledger._delete(self.stage, merged)

    def close(self) -> None:
        """Write what is pending and compact: the pass's records are in a few segments."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        self.flush()
        if self._merged:
            self.compact()


def _merge(files: dict[str, bytes]) -> dict[str, dict[str, Any]]:
    """Records from the files of a pass: the index, batch files, single records."""
    out: dict[str, dict[str, Any]] = {}
    for name, blob in files.items():
        value = json.loads(blob)
        if name.startswith((_INDEX, _BATCH)):
            out.update(value)
        else:
            out[name[: -len(".json")]] = value
    return out


def _read(path: str) -> bytes:
    data = read_bytes(path)
    if data is None:
        raise ProcessingError(f"work file missing: {path} (was the output deleted during the run?)")
    return data


@functools.lru_cache(maxsize=16)
def load_array(path: str, token: str) -> np.ndarray:
    """An array stored by :meth:`Ledger.put_array`, read once per worker and run (``token``)."""
    return np.load(io.BytesIO(_read(path)))
