"""Where data lives: local paths or fsspec URLs, decided in one place.

Every module that must tell a local folder from an object store (``s3://``,
``gs://``, ``memory://``...) asks here, so the rule (``file://`` is local,
anything else with ``://`` is a URL) cannot drift between modules.
"""

from __future__ import annotations

import os
import time
from typing import Any

__all__ = ["filesystem", "is_url", "join", "normalize", "read_bytes", "remove_files", "write_atomic"]


def is_url(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a remote (fsspec) location; ``file://`` counts as local."""
    p = os.fspath(path)
    return "://" in p and not p.startswith("file://")


def normalize(path: str | os.PathLike) -> tuple[str, bool]:
    """``(location, is_local)``: an absolute local path, or the URL as given for fsspec."""
    p = os.fspath(path)
    if p.startswith("file://"):
        p = p[len("file://") :]
    if "://" in p:
        return p.rstrip("/"), False
    return os.path.abspath(os.path.expanduser(p)), True


def filesystem(url: str) -> Any:
    """The fsspec filesystem of a URL (imported lazily: only remote paths need it)."""
    import fsspec

    return fsspec.core.url_to_fs(url)[0]


def join(root: str, *parts: str) -> str:
    """``root/part/...`` with ``/`` for local paths and URLs alike."""
    return "/".join([root.rstrip("/"), *parts])


def write_atomic(path: str, data: bytes, *, fsync: bool = True) -> None:
    """Write a small object so that it exists only once it is complete.

    Local files are written to a temporary name and renamed (atomic on POSIX);
    on object stores a single PUT is atomic already.
    """
    location, local = normalize(path)
    if not local:
        filesystem(location).pipe_file(location, data)
        return
    os.makedirs(os.path.dirname(location), exist_ok=True)
    tmp = f"{location}.{os.getpid()}.{time.monotonic_ns()}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, location)


def read_bytes(path: str) -> bytes | None:
    """The content of a small object, or None when it does not exist."""
    location, local = normalize(path)
    try:
        if local:
            with open(location, "rb") as fh:
                return fh.read()
        return filesystem(location).cat_file(location)
    except FileNotFoundError:
        return None


def remove_files(paths: list[str]) -> None:
    """Delete files (absolute local paths, or URLs of one object store); ones already gone are fine."""
    if not paths:
        return
    location, local = normalize(paths[0])
    if local:
        for p in paths:
            try:
                os.remove(p)
            except FileNotFoundError:
                pass
        return
    fs = filesystem(location)
    try:
        fs.rm(paths)  # one call: a batched delete where the store has one
    except FileNotFoundError:  # some were gone already: one by one
        for p in paths:
            if fs.exists(p):
                fs.rm(p)
