"""Progress of a run: chunks done, throughput and time left, then a summary.

:class:`ProgressReporter` is the ``progress(done, total)`` callable that
:func:`bigdecon.deconvolve` calls as blocks finish. On a terminal it redraws
one line (``\\r``); in a log file or a pod's log it prints a plain line at
most every ``interval`` seconds, plus the last one, so logs stay short.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["ProgressReporter", "format_duration", "format_rate", "format_bytes", "summary_lines"]


def format_duration(seconds: float) -> str:
    """``'42 s'``, ``'3 min 05 s'``, ``'2 h 07 min'``."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_rate(voxels_per_second: float) -> str:
    """Voxels per second with an SI prefix: ``'12.3 Mvoxel/s'``."""
    v = float(voxels_per_second)
    for prefix, factor in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= factor:
            return f"{v / factor:.3g} {prefix}voxel/s"
    return f"{v:.3g} voxel/s"


def format_bytes(n: float | None) -> str:
    """Binary units: ``'1.5 GiB'``; ``'unknown'`` for ``None``."""
    if n is None:
        return "unknown"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - unreachable


class ProgressReporter:
    """A ``progress(done, total)`` callable that prints chunks done, voxels/s and ETA.

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
        self.voxels = int(voxels)
        self.stream = stream if stream is not None else sys.stderr
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty and isatty())
        self.tty = tty
        self.interval = float(interval)
        self.clock = clock
        self.memory_probe = memory_probe
        self.start = clock()
        self.peak_memory: int | None = None
        self.done = 0
        self.total = 0
        self._last_print = -float("inf")
        self._last_probe = -float("inf")
        self._printed_final = False
        self._line_open = False
        self._width = 0

    # -------------------------------------------------------------- reporting

    def __call__(self, done: int, total: int) -> None:
        """Record that ``done`` of ``total`` tasks are finished and maybe print."""
        self.done, self.total = int(done), int(total)
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
        now = self.clock() if now is None else now
        elapsed = max(now - self.start, 1e-9)
        frac = self.done / self.total if self.total else 0.0
        parts = [f"{_bar(frac)} {self.done}/{self.total} chunks ({100 * frac:.0f}%)"]
        if self.done:
            parts.append(format_rate(self.voxels * frac / elapsed))
            left = elapsed * (self.total - self.done) / self.done
            parts.append("done" if self.done >= self.total else f"ETA {format_duration(left)}")
        parts.append(f"elapsed {format_duration(elapsed)}")
        return "  ".join(parts)

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
        return summary_lines(result, peak_memory=max(peaks) if peaks else None)


def summary_lines(result: dict, *, peak_memory: int | None = None) -> list[str]:
    """Wall time, throughput, peak worker memory, and where the output is.

    Parameters
    ----------
    result
        The dict :func:`bigdecon.deconvolve` returns (``output``, ``shape``,
        ``seconds``, ``voxels``, ``chunks``).
    peak_memory
        Highest memory of any worker in bytes, if known.
    """
    seconds = float(result.get("seconds") or 0.0)
    voxels = int(result.get("voxels") or 0)
    rate = voxels / seconds if seconds > 0 else 0.0
    shape = "x".join(str(s) for s in result.get("shape", []))
    output = str(result.get("output", ""))
    return [
        f"Finished in {format_duration(seconds)}: {voxels:,} voxels, {format_rate(rate)}, "
        f"{result.get('chunks', '?')} tasks",
        f"Peak worker memory: {format_bytes(peak_memory)}",
        f"Output: {output} (shape {shape})" if shape else f"Output: {output}",
        f"Open it with: napari --plugin napari-ome-zarr {_quote(output)}",
    ]


def _quote(path: str) -> str:
    import shlex

    return shlex.quote(path)


def _bar(frac: float, width: int = 20) -> str:
    filled = int(round(max(0.0, min(1.0, frac)) * width))
    return "[" + "#" * filled + "." * (width - filled) + "]"

