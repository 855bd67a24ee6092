"""Progress of a run: tasks done, throughput and time left, then a summary.

:class:`ProgressReporter` is the ``progress(done, total)`` callable that
:func:`bigdecon.deconvolve` calls as tasks finish. On a terminal it redraws
one line (``\\r``); in a log file or a pod's log it prints a plain line at
most every ``interval`` seconds, plus the last one, so logs stay short.
:class:`NotebookProgress` is the same for Jupyter: one live progress bar.

A resumed run reports the tasks an earlier run finished at once; they count
as done but not in the throughput or the time left.
"""

from __future__ import annotations

import html
import sys
import time
from collections.abc import Callable
from typing import TextIO

from dask.utils import format_time

from .io.paths import normalize

__all__ = ["ProgressReporter", "NotebookProgress", "format_rate", "format_bytes", "summary_lines"]


def format_rate(voxels_per_second: float) -> str:
    """Voxels per second with an SI prefix: ``'12.3 Mvoxel/s'``."""
    v = float(voxels_per_second)
    for prefix, factor in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= factor:
            return f"{v / factor:.3g} {prefix}voxel/s"
    return f"{v:.3g} voxel/s"


def format_bytes(n: float | None) -> str:
    """Binary units: ``'512 B'``, ``'1.5 GiB'``, ``'2.0 TiB'``; ``'unknown'`` for ``None``.

    One decimal (``dask.utils.format_bytes`` prints two): the CLI's plan and
    summary lines, and their tests, read ``'3.0 GiB'``.
    """
    if n is None:
        return "unknown"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - unreachable


class _Progress:
    """State shared by the progress displays: tasks done, the resumed baseline, rate and ETA."""

    def __init__(self, voxels: int | None, clock: Callable[[], float]) -> None:
        self.voxels = int(voxels or 0)
        self.clock = clock
        self.start = clock()  # the run's start: what "elapsed" counts from
        self.work_start = self.start  # the first report's time: what the rate and ETA count from
        self.done = 0
        self.total = 0
        # Tasks an earlier run finished (a resumed run reports them at once):
        # done, but neither work of this session nor part of its rate or ETA.
        self.resumed = 0
        self._seen = False

    def _update(self, done: int, total: int) -> None:
        done, total = int(done), int(total)
        if not self._seen:
            self.resumed = done  # the first report: what was done before this session
            self.work_start = self.clock()
            self._seen = True
        elif done - self.done > 1:
            # Tasks finish one by one; a jump is the next pass's share of an earlier run.
            self.resumed += done - self.done - 1
        self.done, self.total = done, total

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0

    def rate_and_eta(self, now: float) -> tuple[float | None, float | None]:
        """Voxels per second and seconds left from this session's work; ``None`` before any."""
        elapsed = max(now - self.work_start, 1e-9)
        new = self.done - self.resumed
        if new <= 0 or not self.total:
            return None, None
        rate = self.voxels * new / self.total / elapsed
        return rate, elapsed * (self.total - self.done) / new

    def text(self, now: float | None = None) -> str:
        """``'12/40 tasks (30%)  1.2 Mvoxel/s  ETA 35 s  elapsed 15 s'`` (without a bar)."""
        now = self.clock() if now is None else now
        parts = [f"{self.done}/{self.total} tasks ({100 * self.fraction:.0f}%)"]
        if self.resumed and self.done:
            parts[0] += f", {self.resumed} resumed"
        rate, left = self.rate_and_eta(now)
        if rate is not None:
            if self.voxels:
                parts.append(format_rate(rate))
            parts.append("done" if self.done >= self.total or left is None else f"ETA {format_time(left)}")
        parts.append(f"elapsed {format_time(now - self.start)}")
        return "  ".join(parts)


class ProgressReporter(_Progress):
    """A ``progress(done, total)`` callable that prints tasks done, voxels/s and ETA.

    Parameters
    ----------
    voxels
        Input voxels of the whole run; throughput counts them in proportion
        to the finished tasks.
    stream
        Where to write (default ``sys.stderr``, so that stdout stays clean).
    tty
        Force the single-updating-line mode on or off (default: ``stream.isatty()``).
    interval
        Minimum seconds between two plain lines when not on a terminal.
    clock
        Time source (tests pass a fake one).
    memory_probe
        Optional callable returning the current highest worker memory in
        bytes (or ``None``); sampled at most every ``interval`` seconds to
        record a peak for :meth:`summary`.

    The first report is taken as what an earlier run of a resumed output had
    finished: the rate and the time left count only the tasks done after it.

    Examples
    --------
    >>> report = ProgressReporter(voxels=10**6)
    >>> bigdecon.deconvolve(src, dst, fwhm=3, progress=report)  # doctest: +SKIP
    """

    def __init__(
        self,
        voxels: int,
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
        interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        memory_probe: Callable[[], int | None] | None = None,
    ) -> None:
        super().__init__(voxels, clock)
        self.stream = stream if stream is not None else sys.stderr
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty and isatty())
        self.tty = tty
        self.interval = float(interval)
        self.memory_probe = memory_probe
        self.peak_memory: int | None = None
        self._last_print = -float("inf")
        self._last_probe = -float("inf")
        self._printed_final = False
        self._line_open = False
        self._width = 0

    # -------------------------------------------------------------- reporting

    def __call__(self, done: int, total: int) -> None:
        """Record that ``done`` of ``total`` tasks are finished and maybe print."""
        self._update(done, total)
        now = self.clock()
        self._probe(now)
        final = self.total > 0 and self.done >= self.total
        if final and self._printed_final:
            return
        if self.tty:
            self._draw(self.line(now), final)
        elif final or now - self._last_print >= self.interval:
            self._write(self.line(now) + "\n")
            self._last_print = now
        self._printed_final = self._printed_final or final

    def line(self, now: float | None = None) -> str:
        """The progress text for the current state, without a newline."""
        return f"{_bar(self.fraction)} {self.text(now)}"

    def close(self) -> None:
        """End an open terminal line (after an error, say)."""
        if self._line_open:
            self._write("\n")
            self._line_open = False

    def _draw(self, text: str, final: bool) -> None:
        # Pad with spaces so a shorter line fully covers the previous one.
        pad = max(0, self._width - len(text))
        self._width = len(text)
        self._write("\r" + text + " " * pad + ("\n" if final else ""))
        self._line_open = not final

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed pipe must not stop the run
            pass

    def _probe(self, now: float) -> None:
        if self.memory_probe is None or now - self._last_probe < self.interval:
            return
        self._last_probe = now
        try:
            value = self.memory_probe()
        except Exception:  # monitoring must never break the run
            value = None
        if value is not None:
            self.peak_memory = max(self.peak_memory or 0, int(value))

    # -------------------------------------------------------------- summary

    def summary(self, result: dict, *, peak_memory: int | None = None) -> list[str]:
        """Lines for the end of a run (see :func:`summary_lines`)."""
        peaks = [p for p in (peak_memory, self.peak_memory) if p is not None]
        result = dict(result)
        result.setdefault("resumed", self.resumed)
        return summary_lines(result, peak_memory=max(peaks) if peaks else None)


class NotebookProgress(_Progress):
    """A ``progress(done, total)`` callable for Jupyter: one progress bar, updated in place.

    Uses an ``ipywidgets`` progress bar when that package is installed, and
    otherwise an HTML ``<progress>`` element redrawn through
    ``IPython.display`` (no extra dependency); outside IPython it prints a
    line now and then. Redraws at most every ``interval`` seconds, and always
    at the end.

    Parameters
    ----------
    voxels
        Input voxels of the whole run, for the throughput (optional).
    description
        Text before the bar.
    interval
        Minimum seconds between two redraws.
    widgets
        ``False`` to use the HTML display even where ipywidgets is installed.

    Examples
    --------
    >>> from bigdecon.progress import NotebookProgress
    >>> bigdecon.deconvolve(src, dst, fwhm=3, client=client, progress=NotebookProgress())  # doctest: +SKIP
    """

    def __init__(
        self,
        voxels: int | None = None,
        *,
        description: str = "bigdecon",
        interval: float = 0.25,
        widgets: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(voxels, clock)
        self.description = description
        self.interval = float(interval)
        self._use_widgets = widgets
        self._handle = None
        self._bar = None
        self._label = None
        self._last = -float("inf")
        self._finished = False

    def __call__(self, done: int, total: int) -> None:
        """Record that ``done`` of ``total`` tasks are finished and redraw when due."""
        self._update(done, total)
        now = self.clock()
        final = self.total > 0 and self.done >= self.total
        if self._finished or (not final and now - self._last < self.interval):
            return
        self._last = now
        self._finished = final
        try:
            self._show(now)
        except Exception:  # a display problem must never stop the run
            pass

    def _show(self, now: float) -> None:
        text = self.text(now)
        if self._bar is None and self._handle is None:
            self._start()
        if self._bar is not None:
            self._bar.max = max(1, self.total)
            self._bar.value = min(self.done, self._bar.max)
            self._bar.bar_style = "success" if self._finished else ""
            self._label.value = html.escape(text)
        elif self._handle is not None:
            self._handle.update(self._bundle(text), raw=True)
        else:
            print(f"{self.description}: {text}", flush=True)

    def _start(self) -> None:
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:
            return
        if get_ipython() is None:
            return
        if self._use_widgets:
            try:
                import ipywidgets
            except ImportError:
                pass
            else:
                self._bar = ipywidgets.IntProgress(value=0, min=0, max=max(1, self.total), description=self.description)
                self._label = ipywidgets.HTML()
                display(ipywidgets.HBox([self._bar, self._label]))
                return
        self._handle = display(self._bundle(self.text()), raw=True, display_id=True)

    def _bundle(self, text: str) -> dict[str, str]:
        plain = f"{self.description} {_bar(self.fraction)} {text}"
        page = (
            f'<div style="font-family: monospace">{html.escape(self.description)} '
            f'<progress value="{self.done}" max="{max(1, self.total)}" style="width: 40%"></progress> '
            f"{html.escape(text)}</div>"
        )
        return {"text/plain": plain, "text/html": page}


def summary_lines(result: dict, *, peak_memory: int | None = None) -> list[str]:
    """Wall time, throughput, peak worker memory, and where the output is.

    Parameters
    ----------
    result
        The dict :func:`bigdecon.deconvolve` returns (``output``, ``shape``,
        ``seconds``, ``voxels``, ``chunks``: tasks in all, ``resumed``: tasks
        an earlier run had finished). The throughput counts only this
        session's share of the voxels. With ``peak_scratch_bytes`` and
        ``output_bytes`` a line gives the most disk the run held against the
        finished output's size.
    peak_memory
        Highest memory of any worker in bytes, if known.
    """
    seconds = float(result.get("seconds") or 0.0)
    voxels = int(result.get("voxels") or 0)
    tasks = result.get("chunks")
    resumed = int(result.get("resumed") or 0)
    if isinstance(tasks, int) and tasks > 0 and 0 < resumed <= tasks:
        voxels = int(round(voxels * (tasks - resumed) / tasks))
    rate = voxels / seconds if seconds > 0 else 0.0
    shape = "x".join(str(s) for s in result.get("shape", []))
    output = _absolute(str(result.get("output", "")))
    done = f"{tasks if tasks is not None else '?'} tasks"
    if resumed:
        done += f" ({resumed} resumed from an earlier run)"
    lines = [
        f"Finished in {format_time(seconds)}: {voxels:,} voxels, {format_rate(rate)}, {done}",
        f"Peak worker memory: {format_bytes(peak_memory)}",
    ]
    peak, size = result.get("peak_scratch_bytes"), result.get("output_bytes")
    if peak is not None and size:
        lines.append(f"Peak scratch: {format_bytes(peak)} ({peak / size:.2f}x the output's {format_bytes(size)})")
    return lines + [
        f"Output: {output} (shape {shape})" if shape else f"Output: {output}",
        f"Open it with: napari --plugin napari-ome-zarr {_quote(output)}",
    ]


def _absolute(path: str) -> str:
    """Local paths made absolute (``file://`` dropped); URLs as they are."""
    return normalize(path)[0] if path else path


def _quote(path: str) -> str:
    import shlex

    return shlex.quote(path)


def _bar(frac: float, width: int = 20) -> str:
    filled = int(round(max(0.0, min(1.0, frac)) * width))
    return "[" + "#" * filled + "." * (width - filled) + "]"
