"""``cupy.cuda`` of the stand-in: one device of 16 GiB, streams and synchronisation that do nothing."""

from __future__ import annotations

import types
from typing import Any

MEMORY = 16 * 2**30


def _count() -> int:
    return 1


def _mem_info() -> tuple[int, int]:
    return MEMORY, MEMORY


runtime = types.SimpleNamespace(getDeviceCount=_count, memGetInfo=_mem_info, deviceSynchronize=lambda: None)


class Device:
    def __init__(self, id: int = 0) -> None:
        self.id = id

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def synchronize(self) -> None:
        pass

    @property
    def mem_info(self) -> tuple[int, int]:
        return _mem_info()


class Stream:
    null: Stream

    def synchronize(self) -> None:
        pass


Stream.null = Stream()
