"""Where data lives: local paths or fsspec URLs, decided in one place.

Every module that must tell a local folder from an object store (``s3://``,
``gs://``, ``memory://``...) asks here, so the rule (``file://`` is local,
anything else with ``://`` is a URL) cannot drift between modules.
"""

from __future__ import annotations

import os
import posixpath
import re
import time
from pathlib import PurePosixPath
from typing import Any

__all__ = [
    "canonical",
    "filesystem",
    "is_url",
    "join",
    "normalize",
    "read_bytes",
    "redact",
    "remove_files",
    "same_or_nested",
    "write_atomic",
]

_LOCAL_SCHEMES = ("file://", "local://")


def is_url(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a remote (fsspec) location; ``file://`` and ``local://`` count as local."""
    p = os.fspath(path)
    return "://" in p and not p.startswith(_LOCAL_SCHEMES)


def normalize(path: str | os.PathLike) -> tuple[str, bool]:
    """``(location, is_local)``: an absolute local path, or the URL as given for fsspec."""
    p = os.fspath(path)
    for scheme in _LOCAL_SCHEMES:
        if p.startswith(scheme):
            p = p[len(scheme) :]
    if "://" in p:
        return p.rstrip("/"), False
    return os.path.abspath(os.path.expanduser(p)), True


# Protocols that name one store under two spellings (fsspec registers both for one class).
_SAME_STORE = {"s3a": "s3", "gcs": "gs", "local": "file", "https": "http", "adl": "abfs", "az": "abfs"}


def canonical(path: str | os.PathLike) -> tuple[str, str]:
    """``(protocol, path)`` naming the place ``path`` points to, whatever its spelling.

    A chained URL (``simplecache::file://...``) names its innermost target;
    local paths are resolved through symlinks; protocols that are aliases
    (``s3a`` and ``s3``, ``gcs`` and ``gs``, ``local`` and ``file``) become
    one; credentials and queries are dropped; ``.`` and ``//`` are folded.

    Examples
    --------
    >>> canonical("s3a://bucket/raw.zarr/") == canonical("simplecache::s3://bucket//raw.zarr")
    True
    >>> canonical("local:///tmp/../tmp/x") == canonical("file:///tmp/x")
    True
    """
    p = os.fspath(path).rsplit("::", 1)[-1]  # a cache wrapper reads and deletes its target
    scheme, sep, rest = p.partition("://")
    if not sep:
        scheme, rest = "file", p
    scheme = _SAME_STORE.get(scheme.lower(), scheme.lower())
    if scheme == "file":
        return "file", os.path.realpath(os.path.expanduser(rest or "/"))
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    host, _, tail = rest.partition("/")
    host = host.rsplit("@", 1)[-1].lower()  # user:password@host is the host
    folded = posixpath.normpath("/" + "/".join([host, tail]).strip("/"))
    return scheme, folded


def same_or_nested(a: str | os.PathLike, b: str | os.PathLike) -> str | None:
    """How ``b`` lies relative to ``a``: ``'same'``, ``'inside'`` (b in a), ``'contains'`` (a in b) or None.

    Examples
    --------
    >>> same_or_nested("/data/raw.zarr", "local:///data/raw.zarr/")
    'same'
    >>> same_or_nested("gs://b/raw.zarr", "gcs://b/raw.zarr/out.zarr")
    'inside'
    >>> same_or_nested("/data/a.zarr", "/data/b.zarr") is None
    True
    """
    (pa, la), (pb, lb) = canonical(a), canonical(b)
    if pa != pb:
        return None
    xa, xb = PurePosixPath(la), PurePosixPath(lb)
    if xa == xb:
        return "same"
    if xb.is_relative_to(xa):
        return "inside"
    if xa.is_relative_to(xb):
        return "contains"
    return None


_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<info>[^/@\s'\"]+)@")
_BARE_USERINFO = re.compile(r"(?<![\w/*])[^\s/@'\":]+:[^\s/@'\"]+@(?=[\w\[])")
_QUERY = re.compile(r"(?P<key>[?&][^=&\s#'\"]+=)(?P<value>[^&\s#'\"]+)")


def redact(text: Any) -> Any:
    """``text`` with the credentials of URLs replaced by ``***``: ``user:password@`` and query values.

    Strings are redacted wherever they appear (in lists and dict values too);
    anything else is returned as it is. Everything bigdecon prints or stores
    passes through here.

    Examples
    --------
    >>> redact("http://alice:s3cret@host:8080/raw.zarr?token=abc&x=1")
    'http://***@host:8080/raw.zarr?token=***&x=***'
    >>> redact({"input": "tls://u:p@sched:8786", "n": 3})
    {'input': 'tls://***@sched:8786', 'n': 3}
    """
    if isinstance(text, str):
        if "@" in text:
            text = _USERINFO.sub(lambda m: f"{m['scheme']}***@", text)
            # An address a library quotes without its scheme: 'user:password@host:port'.
            text = _BARE_USERINFO.sub("***@", text)
        if "://" in text and "=" in text:
            text = _QUERY.sub(lambda m: f"{m['key']}***", text)
        return text
    if isinstance(text, dict):
        return {k: redact(v) for k, v in text.items()}
    if isinstance(text, (list, tuple)):
        return type(text)(redact(v) for v in text)
    return text


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
    except (FileNotFoundError, NotADirectoryError):  # a file where a folder would be: nothing there either
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
