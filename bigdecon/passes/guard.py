"""The checks a run makes before it writes or deletes anything (see docs/safety.md).

They run twice: in the CLI before any cluster starts (so a refusal is quick)
and in :func:`bigdecon.deconvolve` itself (so API users get them too).
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from .. import __version__
from ..errors import InputError
from ..io.paths import filesystem, join, normalize, read_bytes, redact, same_or_nested
from ..io.safety import LEASE_NAME, WORK_STAMP, Lease, check_lease, fingerprint, fingerprint_change, root_attrs
from .scratch import work_root

__all__ = ["check_resume", "check_run", "check_work_dir", "finish_cleanup"]


def check_work_dir(source: str | os.PathLike[str], work_dir: str | os.PathLike[str] | None) -> None:
    """Refuse a ``work_dir`` that is, or lies inside, the input: intermediates never go into the user's data.

    Examples
    --------
    >>> check_work_dir("/data/raw.zarr", "/scratch")
    >>> check_work_dir("/data/raw.zarr", "file:///data/raw.zarr/tmp")
    Traceback (most recent call last):
    ...
    bigdecon.errors.InputError: work_dir file:///data/raw.zarr/tmp is inside the input /data/raw.zarr
    """
    if work_dir is None:
        return
    how = same_or_nested(source, work_dir)
    if how in ("same", "inside"):
        where = "is the input" if how == "same" else "is inside the input"
        raise InputError(f"work_dir {redact(os.fspath(work_dir))} {where} {redact(os.fspath(source))}")


def _stored(destination: str) -> dict[str, Any] | None:
    attrs = root_attrs(normalize(destination)[0])
    if attrs is None:
        return None
    info = attrs.get("bigdecon")
    return info if isinstance(info, dict) else {}


def _work_dir(info: dict[str, Any]) -> str | None:
    """The ``work_dir`` a run recorded: in its configuration while running, beside it once complete."""
    if info.get("status") == "complete":
        return info.get("work_dir")
    return (info.get("config") or {}).get("work_dir")


def _exists(path: str) -> bool:
    location, local = normalize(path)
    return os.path.lexists(location) if local else bool(filesystem(location).exists(location))


def check_resume(src: Any, destination: str, work_dir: str | os.PathLike[str] | None = None) -> str | None:
    """Whether ``destination`` may be resumed from ``src``; ``'cleanup'`` when it is complete and only its
    work folder is left (a run killed after finalising).

    Raises
    ------
    InputError
        One line: nothing to resume, root metadata lost, another bigdecon
        version, or an input that changed since the run started (what changed).
    """
    out = normalize(destination)[0]
    where = redact(out)
    info = _stored(out)
    if info is None:
        if read_bytes(join(work_root(out), WORK_STAMP)) is not None:
            raise InputError(
                f"cannot resume {where}: its root metadata is missing (an interrupted --overwrite?); "
                "start again with --overwrite"
            )
        raise InputError(f"nothing to resume: {where} is not a bigdecon output")
    if not info:
        raise InputError(f"nothing to resume: {where} is not a bigdecon output (no bigdecon stamp)")
    config = info.get("config") or {}
    if info.get("status") == "complete":
        if _exists(work_root(out, _work_dir(info))):
            return "cleanup"
        raise InputError(f"nothing to resume: {where} is already complete")
    if config.get("version") != __version__:
        before = config.get("version") or "an earlier version"
        raise InputError(
            f"cannot resume {where}: it was started by bigdecon {before}, this is {__version__}; "
            "start again with --overwrite"
        )
    recorded = config.get("input") or {}
    change = fingerprint_change(recorded, fingerprint(src, keys=list(recorded.get("samples") or {}) or None))
    if change:
        raise InputError(
            f"cannot resume {where}: the input changed since the run started ({change}); start again with --overwrite"
        )
    return None


def finish_cleanup(destination: str) -> str:
    """Remove the work folder a run killed after finalising left behind; returns what was removed."""
    out = normalize(destination)[0]
    lease = Lease.acquire(out)
    try:
        root, local = normalize(work_root(out, _work_dir(_stored(out) or {})))
        lease.check()
        if local:
            shutil.rmtree(root)
        else:
            filesystem(root).rm(root, recursive=True)
    finally:
        lease.release()
    return root


def check_run(
    src: Any,
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    *,
    resume: bool,
    overwrite: bool,
    work_dir: str | os.PathLike[str] | None,
) -> str | None:
    """Every check before a run writes: paths, lease, what ``--overwrite`` would delete, resume.

    Returns ``'cleanup'`` for a ``resume`` that has only a work folder to remove.
    """
    from ..io import check_output_path
    from ..io.safety import listing, owned_entries

    check_output_path(source, destination)
    check_work_dir(source, work_dir)
    out = normalize(destination)[0]
    check_lease(out)
    stored_dir = _work_dir(_stored(out) or {}) if resume else None
    root = work_root(out, work_dir if work_dir is not None else stored_dir)
    if same_or_nested(source, root):  # e.g. a .bigdecon-work that is a symlink into the input
        raise InputError(f"the work folder {redact(root)} resolves to, into or around the input {redact(str(source))}")
    if resume:
        return check_resume(src, out, work_dir)
    present = [n for n in listing(out) or [] if n != LEASE_NAME]
    if overwrite and present:
        owned_entries(out)
    elif present:
        _say_how_to_recover(out)
    return None


def _say_how_to_recover(out: str) -> None:
    """An existing output without --resume or --overwrite: name the one command that recovers its state."""
    where = redact(out)
    info = _stored(out)
    if info is None and read_bytes(join(work_root(out), WORK_STAMP)) is not None:
        raise InputError(f"output exists: {where} lost its root metadata (an interrupted --overwrite); use --overwrite")
    if info and info.get("status") == "complete" and _exists(work_root(out, _work_dir(info))):
        raise InputError(
            f"output exists: {where} is complete but still has the work folder of the run that wrote it "
            "(killed while cleaning up); use --resume to remove it"
        )
