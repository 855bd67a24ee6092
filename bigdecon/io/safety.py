"""What keeps a run from destroying data: the owner lease, bigdecon's stamps, the input's fingerprint.

* **Lease** (:class:`Lease`): a small file in the output (host, pid, the
  process's start time, a heartbeat) held by the run writing it. A live lease
  refuses a second run, ``--overwrite`` and ``--resume`` alike; a stale one
  (a dead process on this host, or no heartbeat for :data:`STALE_SECONDS`) is
  taken over with a notice.
* **Stamps**: bigdecon writes ``attrs['bigdecon']`` into the root of every
  output and a ``stamp.json`` into its work folder. ``--overwrite`` removes
  only a folder that carries one of them, and only the entries bigdecon
  writes there (:func:`owned_entries`).
* **Fingerprint** (:func:`fingerprint`): shape, dtype, chunk grid, the store's
  modification data, checksums of a few sampled chunks (TIFF: size and
  modification time); a resumed run refuses an input whose fingerprint changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
import time
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from bigdecon.errors import BigdeconNotice, InputError, ProcessingError
from bigdecon.io.paths import filesystem, join, normalize, read_bytes, redact, write_atomic

__all__ = [
    "LEASE_NAME",
    "WORK_NAME",
    "Lease",
    "fingerprint",
    "fingerprint_change",
    "is_stamped",
    "listing",
    "owned_entries",
    "read_lease",
    "remove_owned",
    "root_attrs",
    "work_stamp",
]

LEASE_NAME = ".bigdecon-lease.json"
WORK_NAME = ".bigdecon-work"
WORK_STAMP = "stamp.json"
# The lease's heartbeat is rewritten this often; one older than STALE_SECONDS
# (a process on another host that stopped, or a frozen one) may be taken over.
HEARTBEAT_SECONDS = float(os.environ.get("BIGDECON_LEASE_HEARTBEAT", 30))
STALE_SECONDS = float(os.environ.get("BIGDECON_LEASE_STALE", 600))
# Root entries of a bigdecon output: its metadata, the pyramid levels, the work folder, the lease.
_OWNED = re.compile(r"^(zarr\.json|\.zattrs|\.zgroup|\.zmetadata|s\d+|\.bigdecon-work|\.bigdecon-lease\.json)$")
_METADATA = ("zarr.json", ".zattrs", ".zgroup", ".zmetadata")


# --------------------------------------------------------------------------- listing and stamps


def listing(path: str) -> list[str] | None:
    """Names in a folder (local or URL prefix), or None when nothing is there."""
    location, local = normalize(path)
    if local:
        if not os.path.lexists(location):
            return None
        if not os.path.isdir(location):
            return [""]  # a file: never ours to remove
        return sorted(os.listdir(location))
    fs = filesystem(location)
    if not fs.exists(location):
        return None
    if not fs.isdir(location):
        return [""]
    return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(location, detail=False))


def root_attrs(path: str) -> dict[str, Any] | None:
    """The root attributes of a zarr group at ``path`` (v3 or v2), or None when there is no metadata."""
    for name in ("zarr.json", ".zattrs"):
        blob = read_bytes(join(path, name))
        if blob is None:
            continue
        try:
            doc = json.loads(blob)
        except ValueError:
            return {}
        if not isinstance(doc, dict):
            return {}
        return doc.get("attributes", {}) if name == "zarr.json" else doc
    return None


def is_stamped(attrs: Mapping[str, Any] | None) -> bool:
    """Whether root attributes carry bigdecon's stamp (an output it created).

    Examples
    --------
    >>> is_stamped({"bigdecon": {"status": "complete", "config": {}}}), is_stamped({"multiscales": []})
    (True, False)
    """
    info = (attrs or {}).get("bigdecon")
    return isinstance(info, Mapping) and info.get("status") in ("running", "complete") and "config" in info


def work_stamp(root: str, output: str) -> None:
    """Mark a work folder as bigdecon's (it proves an output whose root metadata was lost was ours)."""
    from bigdecon import __version__

    doc = {"bigdecon": __version__, "output": redact(normalize(output)[0])}
    write_atomic(join(root, WORK_STAMP), json.dumps(doc).encode())


def owned_entries(path: str) -> list[str]:
    """The entries of ``path`` that ``--overwrite`` may delete: all of them, or a one-line refusal.

    A folder is bigdecon's when its root attributes carry the stamp or, when
    its root metadata is missing (an interrupted overwrite), when its work
    folder's ``stamp.json`` or a lease is there. Every entry must be one
    bigdecon writes (metadata, levels ``s0, s1...``, work folder, lease).

    Raises
    ------
    InputError
        Anything else, naming what is not bigdecon's.
    """
    where = redact(path)
    names = listing(path) or []
    if names == [""]:
        raise InputError(f"refusing to overwrite {where}: it is a file, not an output bigdecon wrote")
    attrs = root_attrs(path)
    if attrs is None:
        ours = read_bytes(join(path, WORK_NAME, WORK_STAMP)) is not None or LEASE_NAME in names
        if not ours:
            raise InputError(
                f"refusing to overwrite {where}: it is not a bigdecon output (no zarr metadata and no "
                "bigdecon work folder); delete it yourself or choose another OUTPUT"
            )
    elif not is_stamped(attrs):
        raise InputError(
            f"refusing to overwrite {where}: bigdecon did not write it (its attributes carry no bigdecon "
            "stamp); delete it yourself or choose another OUTPUT"
        )
    foreign = [n for n in names if not _OWNED.match(n)]
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise InputError(
            f"refusing to overwrite {where}: it holds {shown}, which bigdecon did not write; move them away first"
        )
    return names


def remove_owned(path: str) -> None:
    """Delete what :func:`owned_entries` allows, keeping the lease; the root metadata goes last.

    Killed part-way, the folder still carries the stamp (root metadata) or the
    lease, so the next ``--overwrite`` may finish the job.
    """
    names = [n for n in owned_entries(path) if n != LEASE_NAME]
    location, local = normalize(path)
    order = [n for n in names if n not in _METADATA] + [n for n in names if n in _METADATA]
    try:
        if local:
            import shutil

            for name in order:
                full = os.path.join(location, name)
                if os.path.isdir(full) and not os.path.islink(full):
                    shutil.rmtree(full)
                else:
                    os.remove(full)
            return
        fs = filesystem(location)
        for name in order:
            fs.rm(join(location, name), recursive=True)
    except OSError as e:
        raise InputError(f"cannot remove existing output: {redact(path)} ({e.strerror or e})") from e


# --------------------------------------------------------------------------- lease


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (None when it does not run or psutil cannot tell)."""
    try:
        import psutil
    except ImportError:
        return None
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def _alive(holder: Mapping[str, Any]) -> bool:
    """Whether a lease's holder still runs: a heartbeat younger than :data:`STALE_SECONDS`
    and, on this host, its process (not a younger one that reused the pid)."""
    if time.time() - float(holder.get("heartbeat", 0)) >= STALE_SECONDS:
        return False
    if holder.get("host") != socket.gethostname():
        return True
    pid = int(holder.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    started, recorded = _process_start(pid), holder.get("process_start")
    return started is None or recorded is None or abs(started - float(recorded)) < 1.0


def _describe(holder: Mapping[str, Any]) -> str:
    age = time.time() - float(holder.get("heartbeat", 0))
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder.get("started", 0))))
    return f"pid {holder.get('pid')} on {holder.get('host')} since {started}, heartbeat {age:.0f} s ago"


def read_lease(output: str) -> dict[str, Any] | None:
    """The lease in ``output`` (a dict), or None."""
    blob = read_bytes(join(normalize(output)[0], LEASE_NAME))
    if blob is None:
        return None
    try:
        doc = json.loads(blob)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def check_lease(output: str) -> None:
    """Refuse (one line) when another live process holds ``output``'s lease."""
    holder = read_lease(output)
    if holder and not _ours(holder) and _alive(holder):
        raise InputError(
            f"output {redact(normalize(output)[0])} is in use by another bigdecon run ({_describe(holder)}); "
            "wait for it to end or stop it"
        )


def _ours(holder: Mapping[str, Any]) -> bool:
    return holder.get("host") == socket.gethostname() and holder.get("pid") == os.getpid()


_HELD: dict[str, Lease] = {}
_HELD_LOCK = threading.Lock()


class Lease:
    """The owner lock of an output: taken by :meth:`acquire`, kept fresh by a thread, dropped by :meth:`release`.

    Re-entrant within a process (the CLI checks, then the run takes it). A
    run that finds its lease taken over by another (it was presumed dead)
    sees :attr:`lost` and deletes nothing more.

    Examples
    --------
    >>> import os, tempfile
    >>> out = os.path.join(tempfile.mkdtemp(), "out.zarr")
    >>> lease = Lease.acquire(out)
    >>> sorted(read_lease(out)) == ["heartbeat", "host", "pid", "process_start", "started", "token"]
    True
    >>> lease.release(); read_lease(out) is None
    True
    """

    def __init__(self, output: str) -> None:
        self.output = normalize(output)[0]
        self.path = join(self.output, LEASE_NAME)
        self.token = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}"
        self.lost = False
        self._count = 0
        self._created_folder = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def acquire(cls, output: str) -> Lease:
        """Take the lease of ``output`` (or count another use of the one this process holds)."""
        key = normalize(output)[0]
        with _HELD_LOCK:
            lease = _HELD.get(key)
            if lease is None:
                lease = cls(output)
                lease._take()
                _HELD[key] = lease
            lease._count += 1
        return lease

    def _doc(self, started: float | None = None) -> bytes:
        now = time.time()
        doc = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "process_start": _process_start(os.getpid()),
            "started": started or now,
            "heartbeat": now,
            "token": self.token,
        }
        return json.dumps(doc).encode()

    def _take(self) -> None:
        location, local = normalize(self.output)
        if local and not os.path.isdir(location):
            if os.path.lexists(location):
                raise InputError(f"output exists and is not a folder: {location}")
            os.makedirs(location)
            self._created_folder = True
        holder = read_lease(self.output)
        if holder is not None:
            if _alive(holder) and not _ours(holder):
                check_lease(self.output)
            warnings.warn(
                f"taking over the lease of {redact(self.output)} from a run that is gone ({_describe(holder)})",
                BigdeconNotice,
                stacklevel=3,
            )
        if local and holder is None:
            try:  # exclusive create: of two runs starting together, one wins
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                check_lease(self.output)
                raise InputError(f"output {location} is being taken by another bigdecon run") from None
            with os.fdopen(fd, "wb") as fh:
                fh.write(self._doc())
        else:
            write_atomic(self.path, self._doc())
        self.started = time.time()
        if (read_lease(self.output) or {}).get("token") != self.token:
            raise InputError(f"output {redact(location)} was taken by another bigdecon run at the same time")
        self._thread = threading.Thread(target=self._beat, name="bigdecon-lease", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                holder = read_lease(self.output)
                if (holder or {}).get("token") != self.token:
                    self.lost = True
                    return
                write_atomic(self.path, self._doc(self.started), fsync=False)
            except OSError:  # a store's hiccup: the next beat tries again (stale only after STALE_SECONDS)
                continue

    def check(self) -> None:
        """Raise when another run took the lease over: this one must not delete or finish anything."""
        if self.lost or (read_lease(self.output) or {}).get("token") != self.token:
            self.lost = True
            raise ProcessingError(
                f"another bigdecon run took over {redact(self.output)} (this run was presumed dead); stopping"
            )

    def release(self) -> None:
        """Drop one use; the last removes the lease file (and the output folder it created, if still empty)."""
        with _HELD_LOCK:
            self._count -= 1
            if self._count > 0:
                return
            _HELD.pop(self.output, None)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if (read_lease(self.output) or {}).get("token") != self.token:
            return  # taken over: the file is another run's
        location, local = normalize(self.output)
        if local:
            try:
                os.remove(self.path)
                if self._created_folder:
                    os.rmdir(location)
            except OSError:  # gone already, or the folder holds the run's output
                pass
        else:
            fs = filesystem(location)
            if fs.exists(self.path):
                fs.rm(self.path)


# --------------------------------------------------------------------------- fingerprint

SAMPLED_CHUNKS = 8


def _stat(path: str) -> Any:
    """What the store says about an object's modification (mtime, ETag...), or None."""
    location, local = normalize(path)
    if local:
        try:
            st = os.stat(location)
        except FileNotFoundError:
            return None
        return [st.st_size, st.st_mtime_ns]
    try:
        info = filesystem(location).info(location)
    except FileNotFoundError:
        return None
    keys = ("size", "mtime", "LastModified", "last_modified", "ETag", "etag", "md5Hash", "generation")
    return [str(info[k]) for k in keys if info.get(k) is not None]


def _digest(blob: bytes | None) -> str | None:
    return None if blob is None else hashlib.sha1(blob).hexdigest()[:16]


def _sample_keys(arr: Any, unit: Any, samples: int) -> list[str]:
    """The first and last stored chunk and others drawn at random (unknown in advance, recorded)."""
    import random

    grid = [max(1, -(-int(n) // int(c))) for n, c in zip(arr.shape, unit)]
    total = int(np.prod(grid))
    picks = {0, total - 1} | set(random.SystemRandom().sample(range(total), min(total, max(0, samples - 2))))
    return [
        arr.metadata.encode_chunk_key(tuple(int(i) for i in np.unravel_index(flat, grid))) for flat in sorted(picks)
    ]


def fingerprint(src: Any, samples: int = SAMPLED_CHUNKS, keys: list[str] | None = None) -> dict[str, Any]:
    """A cheap description of an input's content, recorded at a run's start and compared on resume.

    Parameters
    ----------
    src
        An opened input (:class:`~bigdecon.io.ImageSource`).
    samples
        Stored chunks (or shards) to checksum: the first, the last and others at random.
    keys
        The chunk keys to checksum instead (those a run recorded, to compare on resume).

    Returns
    -------
    dict
        ``shape``, ``dtype``, ``chunks`` and, for zarr, the level's metadata
        checksum and modification data and ``samples`` (chunk key -> checksum,
        ``None`` for a chunk not stored); for TIFF, its ``file`` size and mtime.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from bigdecon.io import open_image, write_image
    >>> path = write_image(os.path.join(tempfile.mkdtemp(), "a.ome.zarr"), np.ones((2, 8, 8), np.uint16), "tyx")
    >>> sorted(fingerprint(open_image(path)))
    ['chunks', 'dtype', 'metadata', 'samples', 'shape']
    """
    level = tuple(src.level)
    out: dict[str, Any] = {
        "shape": [int(n) for n in src.data.shape],
        "dtype": str(src.data.dtype),
        "chunks": [int(c) for c in src.stored_chunks],
    }
    if level[0] == "tiff":
        out["file"] = _stat(level[1])
        return out
    arr = src.array
    root = level[1]
    name = "zarr.json" if arr.metadata.zarr_format == 3 else ".zarray"
    meta = join(root, name)
    out["metadata"] = [_digest(read_bytes(meta)), _stat(meta)]
    if keys is None:
        keys = _sample_keys(arr, src.stored_chunks, samples)
    out["samples"] = {key: _digest(read_bytes(join(root, key))) for key in keys}
    return out


def fingerprint_change(stored: Mapping[str, Any] | None, now: Mapping[str, Any]) -> str | None:
    """What changed between two fingerprints, in a few words, or None.

    Examples
    --------
    >>> a = {"shape": [2, 8], "dtype": "uint16", "samples": {"c/0/0": "ab"}}
    >>> fingerprint_change(a, {**a, "samples": {"c/0/0": "cd"}})
    'chunk c/0/0 changed'
    """
    if not stored:
        return "the run recorded no fingerprint of its input"
    for key, what in (("shape", "shape"), ("dtype", "dtype"), ("chunks", "chunk grid"), ("file", "file size or time")):
        if stored.get(key) != now.get(key):
            return f"{what} {stored.get(key)} -> {now.get(key)}"
    if (stored.get("metadata") or [None])[0] != (now.get("metadata") or [None])[0]:
        return "its array metadata changed"
    before, after = stored.get("samples") or {}, now.get("samples") or {}
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            return f"chunk {key} changed"
    if stored.get("metadata") != now.get("metadata"):
        return "its store's modification data changed"
    return None
