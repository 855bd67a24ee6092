"""Scratch space of an out-of-core run: where the work folder lives, what it frees, how much it peaks at.

The intermediates ``h`` (after steps 1-3) and ``g`` (after step 4) are each as
large as the float32 output. Kept whole until the run ends, they make a run
write about three times its output; freed as they are consumed, a little more
than one. :class:`ChunkReaper` deletes a work array's chunks as soon as every
task that reads them is recorded done in the ledger: the driver calls it after
writing a record, so a resumed run (which reruns only unrecorded tasks) never
reads a deleted chunk. A step-4 block frees sooner the chunks of ``h`` that
no other block reads: as soon as it has read them (a rerun of the block computes
its ``h`` again, see :func:`bigdecon.passes.tasks._read_h`), so with one wave of
blocks ``h`` is not whole while ``g`` is written. :class:`Scratch` also
measures the run's peak use by sampling the size of the output and work
folders as tasks finish.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import math
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from ..io.paths import filesystem, join, normalize
from ..planner import Plan, Region
from .tasks import _region_key

__all__ = ["MIN_H_CHUNK", "ChunkReaper", "Scratch", "folder_bytes", "work_chunks", "work_root"]

WORK_NAME = ".bigdecon-work"


def work_root(destination: str | os.PathLike[str], work_dir: str | os.PathLike[str] | None = None) -> str:
    """The work folder of a run writing ``destination``.

    Inside the output by default; under ``work_dir`` (a local path or URL) in
    a folder named after the output (with a hash of its full location, so two
    outputs of the same name never share one) otherwise.

    Examples
    --------
    >>> work_root("/data/out.zarr")
    '/data/out.zarr/.bigdecon-work'
    >>> work_root("s3://bucket/out.zarr", "/scratch").startswith("/scratch/out.zarr-")
    True
    """
    out = normalize(destination)[0]
    if work_dir is None:
        return join(out, WORK_NAME)
    tag = hashlib.sha1(out.encode()).hexdigest()[:10]
    name = out.rstrip("/").rsplit("/", 1)[-1]
    return join(normalize(work_dir)[0], f"{name}-{tag}{WORK_NAME}")


def resolve_work_dir(work_dir: str | os.PathLike[str] | None, stored: dict[str, Any], resume: bool) -> str | None:
    """The work folder location a run uses: a resumed run keeps the one it was started with.

    Resuming without ``work_dir`` finds the stored one; naming a different one
    is refused (its ledger and intermediates are elsewhere).
    """
    wanted = normalize(work_dir)[0] if work_dir is not None else None
    if not resume:
        return wanted
    before = stored.get("work_dir")
    if wanted is not None and wanted != before:
        raise InputError(
            f"cannot resume with work_dir {wanted}: the run was started with "
            f"{before if before is not None else 'its work folder inside the output'}"
        )
    return before


# The smallest chunk of ``h`` that :func:`work_chunks` cuts, in voxels (256 KiB of float32):
# many more files than that cost the store more than the bytes they free.
MIN_H_CHUNK = 2**16


def work_chunks(plan: Plan, array: str) -> list[int]:
    """Chunks of the intermediate ``h`` (after steps 1-3) or ``g`` (after step 4).

    Each chunk is written by one task only (no two tasks share a chunk) and is
    freed as soon as the tasks reading it are done, so the chunks follow the
    readers. ``h`` is written by whole-plane tasks (in k it is cut like them)
    and read by step-4 blocks with their halo: a block frees the chunks of
    ``h`` no other block reads as soon as it has read them, so only the bands
    its neighbours' halos reach stay until they are recorded. Along y and x,
    where blocks have neighbours, ``h`` is cut into halves of a block, halved
    again (the longer side first) while a piece is at least 32 px and twice
    the halo and a chunk keeps :data:`MIN_H_CHUNK` voxels: those bands are
    then a chunk wide rather than half a block. ``g`` is written by
    step-4 blocks and read by whole-plane tasks: in k it is cut at the common
    divisor of both, so each chunk is freed by the one final task reading it.

    Examples
    --------
    >>> from bigdecon.params import Params
    >>> from bigdecon.planner import Layout, make_plan
    >>> plan = make_plan(Layout(("t", "y", "x"), (64, 512, 512)), Params(fwhm=(3.0, 3.0)), min_tasks=4)
    >>> plan.sparse_block, plan.plane_group
    ({'k': 64, 'y': 256, 'x': 256}, 16)
    >>> work_chunks(plan, "h"), work_chunks(plan, "g")
    ([16, 64, 64], [16, 256, 256])
    """
    lay, blk = plan.layout, plan.sparse_block
    chunk = [1] * len(lay.axes)
    if array == "h":
        k = plan.plane_group
        side = {"y": blk["y"], "x": blk["x"]}
        cut = [name for ax, name in ((lay.y, "y"), (lay.x, "x")) if blk[name] < plan.out_shape[ax]]
        while True:
            halves = [
                n
                for n in cut
                if side[n] // 2 >= max(32, 2 * plan.depth[n]) and k * side["y"] * side["x"] // 2 >= MIN_H_CHUNK
            ]
            if not halves:
                break
            longest = max(halves, key=lambda n: side[n])
            side[longest] = -(-side[longest] // 2)
        chunk[lay.y], chunk[lay.x] = side["y"], side["x"]
    else:
        k = math.gcd(blk["k"], plan.plane_group)
        chunk[lay.y], chunk[lay.x] = blk["y"], blk["x"]
    if lay.k is not None:
        chunk[lay.k] = k
    return chunk


def folder_bytes(path: str) -> int:
    """Bytes stored under a local folder or a URL prefix (0 if it does not exist)."""
    location, local = normalize(path)
    if local:
        total = 0
        for root, _, files in os.walk(location):
            for name in files:
                try:
                    total += os.stat(os.path.join(root, name)).st_size
                except FileNotFoundError:  # deleted while we walk
                    pass
        return total
    fs = filesystem(location)
    return int(fs.du(location)) if fs.exists(location) else 0


def _chunk_ids(region: Region, shape: Sequence[int], chunks: Sequence[int]) -> Iterator[tuple[int, ...]]:
    """Grid indices of the chunks a region touches."""
    spans = []
    for i, (n, c) in enumerate(zip(shape, chunks)):
        a, b = region.get(i, (0, n))
        spans.append(range(a // c, -(-b // c)))
    return itertools.product(*spans)


def _delete(paths: list[str]) -> None:
    """Delete files (local or one object store); ones already gone are fine."""
    if not paths:
        return
    location, local = normalize(paths[0])
    if local:
        for p in paths:
            try:
                os.remove(normalize(p)[0])
            except FileNotFoundError:
                pass
        return
    fs = filesystem(location)
    try:
        fs.rm(paths)
    except FileNotFoundError:  # some were gone (a resumed run freeing again): one by one
        for p in paths:
            if fs.exists(p):
                fs.rm(p)


class ChunkReaper:
    """Deletes a work array's chunks once every task that reads them is done.

    Parameters
    ----------
    path
        The work array (local path or URL).
    readers
        ``(task region, region it reads)`` for every task of the pass that reads it.
    done
        Keys of tasks already recorded (a resumed run): their chunks are freed now.

    Examples
    --------
    >>> import os, tempfile, zarr
    >>> path = os.path.join(tempfile.mkdtemp(), "h.zarr")
    >>> arr = zarr.create_array(path, shape=(4, 8), chunks=(4, 4), dtype="float32", fill_value=0.0)
    >>> arr[:] = 1.0
    >>> a, b = {0: (0, 4), 1: (0, 4)}, {0: (0, 4), 1: (4, 8)}
    >>> reaper = ChunkReaper(path, [(a, {0: (0, 4), 1: (0, 6)}), (b, b)])
    >>> reaper.release(a)  # chunk (0, 1) is still needed by b
    1
    >>> reaper.release(b)
    1
    >>> sorted(os.listdir(os.path.join(path, "c", "0")))
    []
    """

    def __init__(self, path: str, readers: Sequence[tuple[Region, Region]], done: Sequence[str] = ()) -> None:
        import zarr

        arr = zarr.open_array(normalize(path)[0], mode="r")
        self.path = normalize(path)[0]
        self._encode = arr.metadata.encode_chunk_key
        self._of: dict[str, list[tuple[int, ...]]] = {}
        self._count: collections.Counter[tuple[int, ...]] = collections.Counter()
        for task, read in readers:
            ids = list(_chunk_ids(read, arr.shape, arr.chunks))
            self._of[_region_key(task)] = ids
            self._count.update(ids)
        for key in done:
            self._release_key(key)
        self._unfinished = collections.Counter(self._count)  # readers not yet finished, recorded or not

    def finished(self, key: str) -> bool:
        """Count task ``key`` as finished (its record may still be pending); True when
        that leaves a chunk with no unfinished reader, so writing the records frees space."""
        hit = False
        for c in self._of.get(key, ()):
            self._unfinished[c] -= 1
            hit = hit or self._unfinished[c] == 0
        return hit

    def release(self, task: Region) -> int:
        """Task ``task`` is recorded done: delete the chunks nothing else reads; returns how many."""
        return self._release_key(_region_key(task))

    def _release_key(self, key: str) -> int:
        gone = []
        for c in self._of.pop(key, ()):
            self._count[c] -= 1
            if self._count[c] == 0:
                del self._count[c]
                gone.append(join(self.path, self._encode(c)))
        try:
            _delete(gone)
        except OSError as e:  # a store's hiccup costs space until the run ends, never the run
            warnings.warn(f"could not free {len(gone)} work chunks ({e}); the work folder's removal will", stacklevel=2)
            return 0
        return len(gone)


@dataclass(frozen=True)
class Watch:
    """A pass's side of the scratch space: the driver calls :meth:`finished` when a task
    returns (its record may still wait in a batch) and :meth:`recorded` once its record is
    on disk; only then are the inputs that no unfinished task reads deleted."""

    scratch: Scratch
    reaper: ChunkReaper | None

    def finished(self, key: str) -> bool:
        """True when writing the pending records now would free a chunk."""
        return self.reaper is not None and self.reaper.finished(key)

    def recorded(self, task: Region) -> None:
        self.scratch.sample()
        if self.reaper is not None:
            self.reaper.release(task)


class Scratch:
    """The run's scratch space: frees intermediates as they are consumed, and measures the peak.

    The peak is the largest sampled size of the output and the work folder
    together. Samples are taken as tasks finish (before their inputs are
    freed), at most every ``min_interval`` seconds and never more often than
    keeps listing the folders under a tenth of the driver's time.
    """

    def __init__(self, output: str, root: str, min_interval: float = 0.5) -> None:
        self.output = normalize(output)[0]
        self.root = normalize(root)[0]
        self.min_interval = min_interval
        inside = self.root.startswith(self.output.rstrip("/") + "/")
        self.folders = [self.output] if inside else [self.output, self.root]
        self.peak = 0
        self._last = -float("inf")
        self._cost = 0.0

    def sample(self, force: bool = False) -> int:
        """Measure the folders now (or skip if a sample is recent); returns the peak so far."""
        now = time.perf_counter()
        if not force and now - self._last < max(self.min_interval, 10 * self._cost):
            return self.peak
        size = sum(folder_bytes(f) for f in self.folders)
        self._last = time.perf_counter()
        self._cost = self._last - now
        self.peak = max(self.peak, size)
        return self.peak

    def watch(self, path: str | None, readers: Sequence[tuple[Region, Region]], done: Sequence[str] = ()) -> Watch:
        """What the driver tells about a pass's tasks: finished, then recorded (sample, free)."""
        return Watch(self, ChunkReaper(path, readers, done) if path is not None else None)

    def drop(self, path: str) -> None:
        """Delete a whole work array that no later pass reads."""
        self.sample(force=True)
        location, local = normalize(path)
        if local:
            shutil.rmtree(location, ignore_errors=True)
            return
        fs = filesystem(location)
        if fs.exists(location):
            fs.rm(location, recursive=True)
