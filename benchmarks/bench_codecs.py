"""Lossless codecs for a run's float32 arrays: size on disk and CPU time, on real intermediates.

    python benchmarks/bench_codecs.py --small --iters 10   # 32 x 256 x 256, ~1 min
    python benchmarks/bench_codecs.py --iters 10           # 64 x 512 x 512, ~5 min

Runs ``bigdecon.deconvolve`` in this process (every pass, float32 output) on
``bench_scratch``'s generated time-lapse and keeps a copy of each intermediate
when it is largest (``h`` once steps 1-3 end, ``g`` once step 4 ends: whole,
before the run frees their chunks), then stores ``h``, ``g`` and the output
again with each codec, the same chunks: bytes on disk (zarr v3), and encode and
decode speed as single-thread CPU time over the chunks (``numcodecs``, which
zarr's codecs call), every round trip checked bit for bit. ``--iters`` cuts both
iteration counts (the intermediates' noise, hence their compressibility,
hardly depends on them).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from bench_scratch import write_input  # the same data as the scratch benchmark

from bigdecon.passes.scratch import folder_bytes


def codecs() -> dict[str, tuple[object, object]]:
    """name -> (zarr v3 codec, the numcodecs codec it runs)."""
    from numcodecs import Blosc, Zstd
    from zarr.codecs import BloscCodec, ZstdCodec

    table: dict[str, tuple[object, object]] = {"zstd (zarr default)": (ZstdCodec(level=0), Zstd(level=0))}
    for cname, level, shuffle, flag in [
        ("zstd", 1, "shuffle", Blosc.SHUFFLE),
        ("zstd", 3, "shuffle", Blosc.SHUFFLE),
        ("zstd", 5, "shuffle", Blosc.SHUFFLE),
        ("zstd", 3, "bitshuffle", Blosc.BITSHUFFLE),
        ("lz4", 5, "shuffle", Blosc.SHUFFLE),
    ]:
        table[f"blosc {cname} {level} {shuffle}"] = (
            BloscCodec(cname=cname, clevel=level, shuffle=shuffle),
            Blosc(cname, level, flag),
        )
    return table


def run_and_keep(source: str, out: str, keep: str, iters: int | None) -> None:
    """One run; copies of ``h`` and ``g`` at their largest go to ``keep``."""
    import bigdecon

    work = os.path.join(out, ".bigdecon-work")
    largest = {"h": 0, "g": 0}

    def progress(done: int, total: int) -> None:
        for name in largest:
            path = os.path.join(work, f"{name}.zarr")
            size = folder_bytes(path)
            if size > largest[name]:
                largest[name] = size
                shutil.rmtree(os.path.join(keep, f"{name}.zarr"), ignore_errors=True)
                shutil.copytree(path, os.path.join(keep, f"{name}.zarr"))

    cut = {} if iters is None else dict(sparse_iters=iters, deconv_iters=iters)
    bigdecon.deconvolve(source, out, fwhm=3, overwrite=True, progress=progress, **cut)


def measure(name: str, path: str, scratch: str) -> None:
    import numcodecs.blosc
    import zarr

    numcodecs.blosc.use_threads = False  # one thread, as a worker thread's encode
    src = zarr.open_array(path, mode="r")
    data = src[:]
    c = src.chunks
    blocks = [
        np.ascontiguousarray(data[i : i + c[0], j : j + c[1], k : k + c[2]])
        for i in range(0, data.shape[0], c[0])
        for j in range(0, data.shape[1], c[1])
        for k in range(0, data.shape[2], c[2])
    ]
    mib = data.nbytes / 2**20
    print(f"{name}: {data.shape} float32, chunks {c}, {mib:.0f} MiB raw, {np.mean(data == 0):.0%} zeros")
    base = None
    for label, (codec, nc) in codecs().items():
        target = os.path.join(scratch, "a.zarr")
        shutil.rmtree(target, ignore_errors=True)
        arr = zarr.create_array(target, shape=data.shape, chunks=c, dtype="float32", fill_value=0.0, compressors=codec)
        arr[:] = data
        assert np.array_equal(arr[:].view(np.uint32), data.view(np.uint32)), label  # lossless, bit for bit
        size = folder_bytes(target)
        base = base or size
        enc = dec = float("inf")
        for _ in range(3):
            t = time.process_time()
            encoded = [nc.encode(b) for b in blocks]
            enc = min(enc, time.process_time() - t)
            t = time.process_time()
            for e in encoded:
                nc.decode(e)
            dec = min(dec, time.process_time() - t)
        print(
            f"  {label:<26} {size / 2**20:7.2f} MiB {size / base:6.3f}x  "
            f"encode {mib / enc:5.0f} MiB/s  decode {mib / dec:5.0f} MiB/s",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="32 x 256 x 256 instead of 64 x 512 x 512")
    parser.add_argument("--iters", type=int, default=None, help="sparse and deconv iterations (default: defaults)")
    args = parser.parse_args()
    shape = (32, 256, 256) if args.small else (64, 512, 512)
    folder = tempfile.mkdtemp(prefix="bench-codecs-")
    try:
        source, out, keep = (os.path.join(folder, n) for n in ("in.ome.zarr", "out.ome.zarr", "keep"))
        os.makedirs(keep)
        write_input(source, shape)
        run_and_keep(source, out, keep, args.iters)
        print(f"input {'x'.join(map(str, shape))} uint16, iterations {args.iters or 'default'}; size vs zarr's default")
        for name, path in (("h", "h.zarr"), ("g", "g.zarr")):
            measure(name, os.path.join(keep, path), folder)
        measure("output", os.path.join(out, "s0"), folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
