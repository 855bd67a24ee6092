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
folders as tasks finish. On a cluster the reaper's deletions and the samples
happen on a background thread (:class:`Sweeper`), off the driver thread that
collects the finished tasks.
"""

from __future__ import annotations

import hashlib
import math
import os
import queue
import shutil
import threading
import time
import warnings
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

import numpy as np

from ..errors import BigdeconWarning, InputError, ProcessingError
from ..io.paths import filesystem, join, normalize, redact, remove_files
from ..io.safety import WORK_NAME
from ..planner import Plan, Region
from .tasks import _chunk_box, _region_key

__all__ = ["MIN_H_CHUNK", "ChunkReaper", "Scratch", "Sweeper", "folder_bytes", "work_chunks", "work_root"]


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
    # The stored location is redacted: the same one given again (credentials and all) matches it.
    if wanted is not None and redact(wanted) != before:
        raise InputError(
            f"cannot resume with work_dir {redact(wanted)}: the run was started with "
            f"{before if before is not None else 'its work folder inside the output'}"
        )
    if wanted is None and before is not None and "***" in before:
        raise InputError(f"give --work-dir again to resume: {before} (its credentials are not stored)")
    return wanted if wanted is not None else before


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
    if not local:
        fs = filesystem(location)
        return int(fs.du(location)) if fs.exists(location) else 0
    # scandir: each entry's stat comes without building its path in Python (a third
    # less CPU than os.walk + os.stat on 1e4 chunk files).
    total, folders = 0, [location]
    while folders:
        try:
            entries = os.scandir(folders.pop())
        except (FileNotFoundError, NotADirectoryError):  # deleted while we walk
            continue
        with entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.path)
                    else:
                        total += entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:  # deleted while we walk
                    pass
    return total


def _delete(paths: list[str]) -> None:
    """Delete work chunks (a seam for the tests' failing stores)."""
    remove_files(paths)


def _free(paths: list[str]) -> int:
    """Delete work chunks now; a store's hiccup costs space until the run ends, never the run."""
    try:
        _delete(paths)
    except OSError as e:
        warnings.warn(
            f"could not free {len(paths)} work chunks ({e}); the work folder's removal will",
            BigdeconWarning,
            stacklevel=2,
        )
        return 0
    return len(paths)


class ChunkReaper:
    """Which of a work array's chunks can go: those every task that reads them is done with.

    The readers of each chunk are counted in an array over the chunk grid (4
    bytes a chunk), filled from the pass's tasks once: the driver keeps no
    list per task, so its memory does not grow with the number of tasks.

    Parameters
    ----------
    path
        The work array (local path or URL).
    tasks
        Every task of the pass that reads it (iterated once, or twice on a resume).
    read
        The region a task reads (the task grown by its halo).
    done
        Keys of tasks already recorded (a resumed run): the chunks only they read
        are in :attr:`backlog`, for the pass to delete when it starts.

    Examples
    --------
    >>> import os, tempfile, zarr
    >>> path = os.path.join(tempfile.mkdtemp(), "h.zarr")
    >>> arr = zarr.create_array(path, shape=(4, 8), chunks=(4, 4), dtype="float32", fill_value=0.0)
    >>> arr[:] = 1.0
    >>> a, b = {0: (0, 4), 1: (0, 4)}, {0: (0, 4), 1: (4, 8)}
    >>> reaper = ChunkReaper(path, [a, b], read=lambda t: {0: t[0], 1: (t[1][0], min(8, t[1][1] + 2))})
    >>> reaper.finished("0-4.0-4", a), reaper.finished("0-4.4-8", b)  # each leaves a chunk with no reader to come
    (True, True)
    >>> [p[-5:] for p in reaper.freed(["0-4.0-4"])]  # (0, 1) is still needed by b, until b is recorded
    ['c/0/0']
    >>> [p[-5:] for p in reaper.freed(["0-4.4-8"])]  # the paths a background thread may delete
    ['c/0/1']
    """

    def __init__(
        self,
        path: str,
        tasks: Iterable[Region],
        read: Callable[[Region], Region],
        done: Collection[str] = (),
    ) -> None:
        import zarr

        arr = zarr.open_array(normalize(path)[0], mode="r")
        self.path = normalize(path)[0]
        self.read = read
        self._encode = arr.metadata.encode_chunk_key
        self._shape, self._chunks = tuple(arr.shape), tuple(arr.chunks)
        grid = tuple(-(-n // c) for n, c in zip(self._shape, self._chunks))
        self._count = np.zeros(grid, np.int32)  # readers not yet recorded
        for task in tasks:
            self._count[_chunk_box(read(task), self._shape, self._chunks)] += 1
        self._unfinished = self._count.copy()  # readers not yet finished, recorded or not
        # Tasks finished here, not yet recorded: the chunk boxes they read (a batch's worth).
        self._boxes: dict[str, tuple[slice, ...]] = {}
        self.backlog: list[str] = []
        if done:  # a resumed run: its recorded tasks are finished and recorded
            for task in tasks:
                key = _region_key(task)
                if key in done:
                    self.finished(key, task)
                    self.backlog += self.freed([key])

    def finished(self, key: str, task: Region) -> bool:
        """Count task ``key`` (region ``task``) as finished (its record may still be pending); True
        when that leaves a chunk with no unfinished reader, so writing the records frees space."""
        box = _chunk_box(self.read(task), self._shape, self._chunks)
        self._boxes[key] = box
        left = self._unfinished[box]  # a view: counted down in place
        left -= 1
        return bool((left == 0).any())

    def freed(self, keys: Iterable[str]) -> list[str]:
        """Tasks ``keys`` are recorded done: the paths of the chunks nothing else reads (not deleted)."""
        gone = []
        for key in keys:
            box = self._boxes.pop(key, None)
            if box is None:  # a task that does not read this array
                continue
            left = self._count[box]
            left -= 1
            for idx in np.argwhere(left == 0):
                chunk = tuple(int(j) + s.start for j, s in zip(idx, box))
                gone.append(join(self.path, self._encode(chunk)))
        return gone


class Watch:
    """A pass's side of the scratch space.

    The driver calls :meth:`open` when the pass starts, :meth:`finished` when a
    task returns (its record may still wait in a batch), :meth:`recorded` once
    records are on disk (only then are the inputs that no unfinished task reads
    deleted) and :meth:`close` when the pass ends, failed or not. On a cluster
    (``open(background=True)``) the samples and deletions run on a
    :class:`Sweeper` thread; without one, here.
    """

    def __init__(self, scratch: Scratch, reaper: ChunkReaper | None) -> None:
        self.scratch, self.reaper = scratch, reaper
        self._sweeper: Sweeper | None = None
        self._recorded = False  # did this pass record a task (write anything)?

    def open(self, background: bool = False) -> None:
        """Start the pass: delete what an earlier run's recorded tasks freed (from the thread if ``background``)."""
        if background:
            self._sweeper = Sweeper(self.scratch)
        if self.reaper is not None and self.reaper.backlog:
            backlog, self.reaper.backlog = self.reaper.backlog, []
            self._delete(backlog)

    def finished(self, key: str, task: Region) -> bool:
        """Task ``key`` (region ``task``) returned: True when writing the pending records now would free a chunk."""
        return self.reaper is not None and self.reaper.finished(key, task)

    def recorded(self, keys: Sequence[str]) -> None:
        """Tasks ``keys`` are recorded on disk: sample the folders, then free what nothing unfinished reads."""
        if not keys:
            return
        self._recorded = True
        paths = self.reaper.freed(keys) if self.reaper is not None else []
        if self._sweeper is None:
            self.scratch.sample()
        self._delete(paths)

    def _delete(self, paths: list[str]) -> None:
        lease = self.scratch.lease
        if lease is not None and lease.lost:  # another run owns the output now: delete nothing of it
            return
        if self._sweeper is not None:
            if paths:
                self._sweeper.put(paths)
        else:
            _free(paths)

    def close(self, failed: bool = False) -> None:
        """End of the pass: wait for the queued deletions and stop the thread (see :meth:`Sweeper.close`)."""
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.close(failed)
        if self._recorded and not failed:
            self.scratch.sample(force=True)  # the pass's output is whole, its inputs not yet dropped


# The sweeper's queue, in deletion requests (one per batch of records): a driver
# this far ahead of the deletions waits for them.
SWEEP_QUEUE = 4096


class Sweeper:
    """A background thread that deletes freed work chunks and samples the scratch folders.

    The driver thread, which collects the finished tasks, only queues the paths
    of chunks nothing unfinished reads (:meth:`put`). The thread takes all that
    is queued at once, samples the folders if a sample is due (before the
    deletion: the sample sees a pass's inputs and outputs together), then
    deletes the paths in one batch (one ``rm`` of many paths on an object
    store). With nothing queued it still samples at :class:`Scratch`'s pace.

    :meth:`close` waits for every queued deletion, then stops the thread, so
    nothing is deleted after a pass (or the run) returns. A store's ``OSError``
    costs space, not the run: one warning says how many chunks were left. Any
    other error in the thread is raised by :meth:`close` (as a
    :class:`~bigdecon.errors.ProcessingError`), or warned of in one line when
    the pass had failed already.

    Examples
    --------
    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> paths = [os.path.join(folder, f"chunk-{i}") for i in range(3)]
    >>> for p in paths:
    ...     with open(p, "wb") as f:
    ...         _ = f.write(bytes(100))
    >>> sweeper = Sweeper(Scratch(folder, os.path.join(folder, ".work")))
    >>> sweeper.put(paths)
    >>> sweeper.close()
    >>> os.listdir(folder), sweeper.scratch.peak
    ([], 300)
    """

    def __init__(self, scratch: Scratch) -> None:
        self.scratch = scratch
        self._queue: queue.Queue[list[str] | None] = queue.Queue(maxsize=SWEEP_QUEUE)
        self._error: Exception | None = None
        self._unfreed, self._store_error = 0, ""  # chunks a store failed to delete, and why
        self._thread = threading.Thread(target=self._run, name="bigdecon-scratch", daemon=True)
        self._thread.start()

    def put(self, paths: list[str]) -> None:
        """Queue chunks to delete."""
        self._queue.put(paths)

    def _run(self) -> None:
        stop = False
        while not stop:
            try:
                items = [self._queue.get(timeout=self.scratch.due())]
            except queue.Empty:  # nothing to delete: a sample is due
                items = []
            while True:  # and everything queued meanwhile, in the same batch
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = None in items
            paths = [p for item in items if item for p in item]
            try:
                self.scratch.sample()
                _delete(paths)
            except OSError as e:  # a store's hiccup: the work folder's removal frees them
                self._unfreed, self._store_error = self._unfreed + len(paths), str(e)
            except Exception as e:  # a bug: raised in the driver by close()
                if self._error is None:
                    self._error = e

    def close(self, failed: bool = False) -> None:
        """Wait for the queued deletions, stop the thread; raise its error (warn if ``failed``)."""
        self._queue.put(None)
        self._thread.join()
        if self._unfreed:
            warnings.warn(
                f"could not free {self._unfreed} work chunks ({self._store_error}); the work folder's removal will",
                BigdeconWarning,
                stacklevel=3,
            )
        e = self._error
        if e is None:
            return
        message = f"freeing work chunks failed: {type(e).__name__}: {e}"
        if failed:  # the pass's own error is the one to raise
            warnings.warn(message, BigdeconWarning, stacklevel=3)
            return
        raise ProcessingError(message) from e


# A sample of the scratch folders lists every chunk file: on a local disk ~3-5 us of
# CPU per file, ~30 ms at 1e4 tasks, seconds at 1e6. The samples take at most this
# share of one core's CPU time and of the sampling thread's wall time (object store
# listings wait): at 0.5% the samples cost 0.2 ms per task at 40 ms of wall per task.
# Each pass also ends with a sample, where an intermediate is whole.
SAMPLE_CPU_SHARE = 0.005
SAMPLE_WALL_SHARE = 0.1


class Scratch:
    """The run's scratch space: frees intermediates as they are consumed, and measures the peak.

    The peak is the largest sampled size of the output and the work folder
    together. Samples are taken as tasks finish (before their inputs are
    freed), at most every ``min_interval`` seconds and never more often than
    keeps listing the folders under :data:`SAMPLE_CPU_SHARE` of a core and
    :data:`SAMPLE_WALL_SHARE` of the time.
    """

    def __init__(self, output: str, root: str, min_interval: float = 0.5, lease: Any = None) -> None:
        self.lease = lease  # the output's Lease: once lost, nothing more is deleted
        self.output = normalize(output)[0]
        self.root = normalize(root)[0]
        self.min_interval = min_interval
        inside = self.root.startswith(self.output.rstrip("/") + "/")
        self.folders = [self.output] if inside else [self.output, self.root]
        self.peak = 0
        self._last = -float("inf")
        self._gap = min_interval
        self._lock = threading.Lock()  # the driver's forced samples and the sweeper's

    def due(self) -> float:
        """Seconds until the next sample is due (0 if it is)."""
        return max(0.0, self._last + self._gap - time.perf_counter())

    def sample(self, force: bool = False) -> int:
        """Measure the folders now (or skip if a sample is recent); returns the peak so far."""
        with self._lock:
            now = time.perf_counter()
            if not force and now < self._last + self._gap:
                return self.peak
            cpu = time.thread_time()
            size = sum(folder_bytes(f) for f in self.folders)
            self._last = time.perf_counter()
            cost, wall = time.thread_time() - cpu, self._last - now
            self._gap = max(self.min_interval, cost / SAMPLE_CPU_SHARE, wall / SAMPLE_WALL_SHARE)
            self.peak = max(self.peak, size)
            return self.peak

    def watch(
        self,
        path: str | None,
        tasks: Iterable[Region] = (),
        read: Callable[[Region], Region] = lambda region: region,
        done: Collection[str] = (),
    ) -> Watch:
        """What the driver tells about a pass's tasks (reading ``read(task)`` of ``path``): finished,
        then recorded (sample, free)."""
        return Watch(self, ChunkReaper(path, tasks, read, done) if path is not None else None)

    def drop(self, path: str) -> None:
        """Delete a whole work array that no later pass reads."""
        self.sample(force=True)
        if self.lease is not None and self.lease.lost:
            return
        location, local = normalize(path)
        try:
            if local:
                shutil.rmtree(location)
            else:
                fs = filesystem(location)
                if fs.exists(location):
                    fs.rm(location, recursive=True)
        except FileNotFoundError:
            pass
        except OSError as e:  # costs space until the work folder goes, not the run
            warnings.warn(f"could not remove the work array {location} ({e})", BigdeconWarning, stacklevel=2)
