"""Tests of bigdecon.io against real zarr stores and TIFF files on disk."""

from __future__ import annotations

import json
import warnings

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from bigdecon.errors import BigdeconNotice, InputError
from bigdecon.io import (
    OmeZarrWriter,
    aligned_chunks,
    cast_block,
    check_output_path,
    open_image,
    write_block,
    write_dask,
)


def _ramp(shape: tuple[int, ...], dtype: str = "float32") -> np.ndarray:
    """Distinct values everywhere, so misplaced blocks show up."""
    return np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape).astype(dtype)


def _write_all(path, data: np.ndarray, block: tuple[int, ...]) -> None:
    """Write ``data`` block by block with write_block, as the passes' tasks do."""
    grid = [range(0, n, b) for n, b in zip(data.shape, block)]
    for idx in np.ndindex(*[len(g) for g in grid]):
        region = tuple(slice(g[i], min(g[i] + b, n)) for g, i, b, n in zip(grid, idx, block, data.shape))
        write_block(path, region, data[region])


def _validate(path, version: str) -> None:
    """The output must satisfy ome-zarr-models and open with ome-zarr-py's Reader."""
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    group = zarr.open_group(path, mode="r")
    if version == "0.5":
        from ome_zarr_models.v05 import Image
    else:
        from ome_zarr_models.v04 import Image
    Image.from_zarr(group)
    fmt = FormatV05() if version == "0.5" else FormatV04()
    nodes = list(Reader(parse_url(str(path), fmt=fmt))())
    assert nodes and nodes[0].data, "ome-zarr-py found no image"
    return nodes[0]


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_round_trip_pyramid_metadata(tmp_path, version):
    data = _ramp((2, 3, 70, 90))
    out = tmp_path / "out.zarr"
    channels = [{"label": "DAPI", "color": "0000FF"}, {"label": "GFP", "color": "00FF00"}]
    w = OmeZarrWriter(
        out,
        shape=data.shape,
        axes="czyx",
        chunks=(1, 2, 16, 32),
        ngff_version=version,
        scale={"z": 0.4, "y": 0.1, "x": 0.1},
        units={"z": "µm", "y": "micrometer", "x": "um"},
        translation={"z": 2.0},
        channels=channels,
        run_config={"iterations": 5},
    )
    _write_all(out, data, w.block_shape)
    w.finalize(attrs={"version": "test"}, min_size=16)

    src = open_image(out)
    assert src.ngff_version == version
    assert src.axes == ("c", "z", "y", "x")
    assert src.scale == {"c": 1.0, "z": 0.4, "y": 0.1, "x": 0.1}
    assert src.units == {"z": "micrometer", "y": "micrometer", "x": "micrometer"}
    assert src.translation["z"] == 2.0
    assert (
        src.stored_chunks[2] == 16
        and src.data.chunks[2][0] in (16, 32, 64, src.shape[2])
        and src.data.dtype == np.float32
    )
    np.testing.assert_array_equal(src.data.compute(), data)
    assert [c["label"] for c in src.channels] == ["DAPI", "GFP"]
    assert [c["color"] for c in src.channels] == ["0000FF", "00FF00"]
    for ch in src.channels:
        win = ch["window"]
        assert win["min"] <= win["start"] < win["end"] <= win["max"]
    info = src.attrs["bigdecon"]
    assert info["status"] == "complete" and info["version"] == "test"
    assert info["config"] == {"iterations": 5}

    # Pyramid: 70x90 -> 35x45 -> 18x23 (stops before y < 16); y/x scale doubles.
    group = zarr.open_group(out, mode="r")
    assert [group[f"s{i}"].shape for i in range(3)] == [(2, 3, 70, 90), (2, 3, 35, 45), (2, 3, 18, 23)]
    assert "s3" not in group
    ome = group.attrs["ome"] if version == "0.5" else group.attrs.asdict()
    datasets = ome["multiscales"][0]["datasets"]
    assert [d["coordinateTransformations"][0]["scale"] for d in datasets] == [
        [1.0, 0.4, 0.1, 0.1],
        [1.0, 0.4, 0.2, 0.2],
        [1.0, 0.4, 0.4, 0.4],
    ]
    expected_s1 = data.reshape(2, 3, 35, 2, 45, 2).mean(axis=(3, 5))
    np.testing.assert_allclose(group["s1"][:], expected_s1, rtol=1e-6)

    node = _validate(out, version)
    assert len(node.data) == 3
    if version == "0.4":
        assert group["s0"].metadata.dimension_separator == "/"


@pytest.mark.parametrize(
    "axes,shape",
    [("yx", (40, 36)), ("zyx", (3, 40, 36)), ("tyx", (2, 40, 36)), ("tczyx", (2, 2, 3, 40, 36))],
)
def test_axes_subsets(tmp_path, axes, shape):
    data = _ramp(shape, "uint16")
    out = tmp_path / f"{axes}.zarr"
    chunks = tuple(16 if a in "yx" else 1 for a in axes)
    w = OmeZarrWriter(
        out,
        shape=shape,
        axes=axes,
        chunks=chunks,
        dtype="uint16",
        scale={"t": 2.5, "y": 0.2, "x": 0.2},
        units={"t": "s", "y": "nm", "x": "nm"},
    )
    _write_all(out, data, chunks)
    w.finalize(min_size=8)
    src = open_image(out)
    assert src.axes == tuple(axes)
    assert src.data.dtype == np.uint16
    np.testing.assert_array_equal(src.data.compute(), data)
    if "t" in axes:
        assert src.scale["t"] == 2.5 and src.units["t"] == "second"
    assert src.units["y"] == "nanometer"
    n_channels = shape[axes.index("c")] if "c" in axes else 1
    assert len(src.channels) == n_channels
    node = _validate(out, "0.5")
    assert len(node.data) == 3  # 40 -> 20 -> 10


def test_sharded_output_and_misaligned_blocks(tmp_path):
    out = tmp_path / "sharded.zarr"
    data = _ramp((3, 64, 64))
    w = OmeZarrWriter(out, shape=data.shape, axes="zyx", chunks=(1, 16, 16), shards=(1, 32, 32))
    assert w.block_shape == (1, 32, 32)
    with pytest.raises(ValueError, match="not aligned"):
        w.write_block((slice(0, 1), slice(0, 16), slice(0, 32)), data[:1, :16, :32])
    write_dask(out, da.from_array(data, chunks=(2, 20, 20)))  # rechunked to whole shards
    np.testing.assert_array_equal(w.open_level0(mode="r")[:], data)
    w.finalize(min_size=16)
    _validate(out, "0.5")
    assert zarr.open_group(out, mode="r")["s1"].shards == (1, 32, 32)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:Scale value not provided:UserWarning")
def test_reads_ome_zarr_py_output(tmp_path):
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    data = _ramp((2, 5, 64, 48), "uint16")
    for version, fmt in (("0.5", None), ("0.4", FormatV04())):
        path = tmp_path / f"ozp{version}.zarr"
        group = zarr.open_group(path, mode="w", zarr_format=3 if fmt is None else 2)
        write_image(
            data,
            group,
            axes="czyx",
            fmt=fmt,
            scale={"z": 0.5, "y": 0.25, "x": 0.25},
            axes_units={"z": "micrometer", "y": "micrometer", "x": "micrometer"},
        )
        src = open_image(path)
        assert src.ngff_version == version
        assert src.axes == ("c", "z", "y", "x")
        assert src.scale["z"] == 0.5 and src.scale["x"] == 0.25
        assert src.units == {"z": "micrometer", "y": "micrometer", "x": "micrometer"}
        np.testing.assert_array_equal(src.data.compute(), data)


def test_bioformats2raw_layout_and_file_url(tmp_path):
    root = tmp_path / "b2r.zarr"
    top = zarr.open_group(root, mode="w", zarr_format=2, attributes={"bioformats2raw.layout": 3})
    image = top.create_group("0")
    arr = image.create_array("0", shape=(8, 8), chunks=(4, 4), dtype="uint8")
    arr[:] = 7
    image.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
            "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0]}]}],
        }
    ]
    src = open_image(f"file://{root}")
    assert src.axes == ("y", "x") and src.path.endswith("0")
    assert int(src.data.sum().compute()) == 7 * 64


# --------------------------------------------------------------------------- TIFF


def test_ome_tiff_input(tmp_path):
    path = tmp_path / "img.ome.tif"
    data = _ramp((2, 5, 32, 48), "uint16")
    tifffile.imwrite(
        path,
        data,
        ome=True,
        metadata={
            "axes": "CZYX",
            "PhysicalSizeX": 0.1,
            "PhysicalSizeY": 0.11,
            "PhysicalSizeZ": 0.3,
            "PhysicalSizeXUnit": "µm",
            "PhysicalSizeYUnit": "µm",
            "PhysicalSizeZUnit": "nm",
            "Channel": {"Name": ["DAPI", "GFP"]},
        },
    )
    src = open_image(path)
    assert src.axes == ("c", "z", "y", "x") and src.ngff_version is None
    assert src.scale == {"c": 1.0, "z": 0.3, "y": 0.11, "x": 0.1}
    assert src.units == {"x": "micrometer", "y": "micrometer", "z": "nanometer"}
    assert [c["label"] for c in src.channels] == ["DAPI", "GFP"]
    np.testing.assert_array_equal(src.data.compute(), data)


def test_imagej_and_plain_tiff_axes(tmp_path):
    hyper = tmp_path / "hyper.tif"
    data = _ramp((2, 3, 2, 16, 20), "float32")  # TZCYX, ImageJ's order
    tifffile.imwrite(
        hyper,
        data,
        imagej=True,
        resolution=(1 / 0.2, 1 / 0.2),
        metadata={"axes": "TZCYX", "spacing": 0.5, "unit": "um", "finterval": 3.0},
    )
    src = open_image(hyper)
    assert src.axes == ("t", "z", "c", "y", "x")
    assert src.scale["z"] == 0.5 and src.scale["t"] == 3.0
    assert src.scale["x"] == pytest.approx(0.2)
    assert src.units["x"] == "micrometer" and src.units["t"] == "second"
    np.testing.assert_array_equal(src.data.compute(), data)

    frames = tmp_path / "frames.tif"
    tifffile.imwrite(frames, _ramp((4, 16, 20), "uint8"), imagej=True, metadata={"axes": "TYX"})
    assert open_image(frames).axes == ("t", "y", "x")

    plain = tmp_path / "plain.tiff"  # tifffile calls the unnamed leading axis 'Q'
    stack = _ramp((3, 16, 20), "uint16")
    tifffile.imwrite(plain, stack, photometric="minisblack")
    src = open_image(plain)
    assert src.axes == ("z", "y", "x")
    np.testing.assert_array_equal(src.data.compute(), stack)

    # Lazy and picklable: a TIFF-backed graph must survive pickling to workers.
    import pickle

    np.testing.assert_array_equal(pickle.loads(pickle.dumps(src.data)).compute(), stack)


# --------------------------------------------------------------------------- bad input


def _zarr_with_axes(path, names: list[str]) -> None:
    group = zarr.open_group(path, mode="w", zarr_format=3)
    group.create_array("0", shape=(4,) * len(names), chunks=(4,) * len(names), dtype="uint8")
    group.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "axes": [{"name": n, "type": "space"} for n in names],
                "datasets": [
                    {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0] * len(names)}]}
                ],
            }
        ],
    }


def test_bad_inputs_raise_input_error(tmp_path):
    cases = {}
    cases["input not found"] = tmp_path / "missing.zarr"
    plain_dir = tmp_path / "folder"
    plain_dir.mkdir()
    (plain_dir / "notes.txt").write_text("hello")
    cases["no zarr metadata"] = plain_dir
    arr_path = tmp_path / "array.zarr"
    zarr.create_array(arr_path, shape=(4, 4), dtype="f4")
    cases["plain zarr array without OME metadata"] = arr_path
    bare = tmp_path / "bare.zarr"
    zarr.open_group(bare, mode="w")
    cases["no 'multiscales' metadata"] = bare
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    cases["neither an OME-Zarr folder nor a TIFF"] = text
    fake_tif = tmp_path / "fake.tif"
    fake_tif.write_text("not a tiff either")
    cases["cannot read TIFF"] = fake_tif
    no_y = tmp_path / "noy.zarr"
    _zarr_with_axes(no_y, ["z", "x"])
    cases["lack y and x"] = no_y
    odd = tmp_path / "odd.zarr"
    _zarr_with_axes(odd, ["q", "y", "x"])
    cases["unsupported axes"] = odd
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((16, 16, 3), np.uint8), photometric="rgb")
    cases["RGB"] = rgb

    for expected, path in cases.items():
        with pytest.raises(InputError, match=expected) as info:
            open_image(path)
        message = str(info.value)
        assert "\n" not in message and str(path) in message, message


def test_unfinished_output_is_not_an_image(tmp_path):
    out = tmp_path / "partial.zarr"
    OmeZarrWriter(out, shape=(32, 32), axes="yx", chunks=(16, 16))
    attrs = zarr.open_group(out, mode="r").attrs.asdict()
    assert "multiscales" not in json.dumps(attrs)
    assert attrs["bigdecon"]["status"] == "running"
    with pytest.raises(InputError, match="incomplete"):
        open_image(out)


# --------------------------------------------------------------------------- output paths


def test_output_path_checks(tmp_path):
    src = tmp_path / "in.zarr"
    src.mkdir()
    with pytest.raises(InputError, match="is the input"):
        check_output_path(src, src)
    with pytest.raises(InputError, match="inside the input"):
        check_output_path(src, src / "out.zarr")
    with pytest.raises(InputError, match="inside the output"):
        check_output_path(src, tmp_path)
    check_output_path(src, tmp_path / "out.zarr")  # a sibling is fine

    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(InputError, match=f"cannot write output: {a_file}/out.zarr"):
        OmeZarrWriter(a_file / "out.zarr", shape=(8, 8), axes="yx", chunks=(8, 8))

    with pytest.raises(InputError, match="refusing to overwrite"):
        OmeZarrWriter(a_file, shape=(8, 8), axes="yx", chunks=(8, 8), overwrite=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("precious")
    with pytest.raises(InputError, match="refusing to overwrite"):
        OmeZarrWriter(other, shape=(8, 8), axes="yx", chunks=(8, 8), overwrite=True)
    assert (other / "keep.txt").exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    OmeZarrWriter(empty, shape=(8, 8), axes="yx", chunks=(8, 8))  # an empty folder is usable


def test_resume_and_overwrite(tmp_path):
    out = tmp_path / "out.zarr"
    kw = dict(shape=(4, 32, 32), axes="zyx", chunks=(1, 16, 16), run_config={"lam": 0.1})
    OmeZarrWriter(out, **kw)
    write_block(out, (slice(0, 1), slice(0, 16), slice(0, 16)), np.ones((1, 16, 16)))

    with pytest.raises(InputError, match="output exists: .*--overwrite.*--resume"):
        OmeZarrWriter(out, **kw)
    again = OmeZarrWriter(out, resume=True, **kw)
    assert again.open_level0(mode="r")[0, 0, 0] == 1.0

    with pytest.raises(InputError, match="chunks differ"):
        OmeZarrWriter(out, resume=True, **{**kw, "chunks": (1, 8, 8)})
    with pytest.raises(InputError, match="shape differ"):
        OmeZarrWriter(out, resume=True, **{**kw, "shape": (4, 32, 48)})
    with pytest.raises(InputError, match="dtype differ"):
        OmeZarrWriter(out, resume=True, dtype="uint16", **kw)
    with pytest.raises(InputError, match="run configuration differ"):
        OmeZarrWriter(out, resume=True, **{**kw, "run_config": {"lam": 0.2}})
    with pytest.raises(InputError, match="nothing to resume"):
        OmeZarrWriter(tmp_path / "never.zarr", resume=True, **kw)

    fresh = OmeZarrWriter(out, overwrite=True, **kw)
    assert fresh.open_level0(mode="r")[0, 0, 0] == 0.0
    fresh.finalize()
    with pytest.raises(InputError, match="already complete"):
        OmeZarrWriter(out, resume=True, **kw)
    OmeZarrWriter(out, overwrite=True, **kw)  # a finished image may be replaced


# --------------------------------------------------------------------------- casting and alignment


def test_cast_block_clips_and_rounds():
    block = np.array([70000.0, -3.0, 1.4, 1.6, np.nan, np.inf, 65535.4], dtype=np.float32)
    np.testing.assert_array_equal(cast_block(block, "uint16"), [65535, 0, 1, 2, 0, 65535, 65535])
    np.testing.assert_array_equal(cast_block(np.array([-200.7, 200.2]), np.int8), [-128, 127])
    np.testing.assert_array_equal(cast_block(np.array([-5, 300], np.int32), np.uint8), [0, 255])
    assert cast_block(np.array([1e30]), np.uint64)[0] == np.iinfo(np.uint64).max - 2047
    assert cast_block(np.ones(2), "float32").dtype == np.float32


def test_integer_output_is_clipped(tmp_path):
    out = tmp_path / "u16.zarr"
    OmeZarrWriter(out, shape=(16, 16), axes="yx", chunks=(8, 8), dtype="uint16")
    block = np.full((8, 8), 70000.0)
    block[0, 0] = -3.0
    write_block(out, (slice(0, 8), slice(0, 8)), block)
    stored = zarr.open_array(str(out / "s0"), mode="r")[:8, :8]
    assert stored[0, 0] == 0 and stored[1, 1] == 65535


def test_aligned_chunks():
    assert aligned_chunks((100,), (30,), (16,)) == ((16,) * 6 + (4,),)
    assert aligned_chunks((100,), (50,), (16,)) == ((48, 48, 4),)
    assert aligned_chunks((10,), (64,), (16,)) == ((10,),)


def _write_task(block, *, path, block_info=None):
    # Runs in a worker process: only the path travels.
    region = tuple(slice(a, b) for a, b in block_info[0]["array-location"])
    write_block(path, region, block)
    return np.ones((1,) * block.ndim, bool)


def test_parallel_writes_from_worker_processes(tmp_path):
    import distributed

    out = tmp_path / "parallel.zarr"
    shape, chunks = (6, 100, 90), (2, 32, 32)
    expected = _ramp(shape)
    src = da.from_array(expected, chunks=(3, 45, 50))  # deliberately not on zarr chunk borders
    w = OmeZarrWriter(out, shape=shape, axes="zyx", chunks=chunks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cluster start-up chatter (ports, memory limits)
        with (
            distributed.LocalCluster(
                n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None
            ) as cluster,
            distributed.Client(cluster),
        ):
            # 1. write_dask realigns the misaligned chunks before writing.
            write_dask(out, src + 0)
            np.testing.assert_array_equal(w.open_level0(mode="r")[:], expected)
            # 2. the passes' own pattern: aligned blocks, each written by a task.
            aligned = (src * 2).rechunk(aligned_chunks(shape, (2, 64, 64), w.block_shape))
            aligned.map_blocks(
                _write_task, path=str(out), dtype=bool, chunks=tuple((1,) * len(c) for c in aligned.chunks)
            ).compute()
            np.testing.assert_array_equal(w.open_level0(mode="r")[:], expected * 2)
            # 3. finalize builds the pyramid on the cluster too.
            w.finalize(min_size=32)
    group = zarr.open_group(out, mode="r")
    np.testing.assert_allclose(
        group["s1"][:],
        np.pad(expected * 2, ((0, 0), (0, 0), (0, 0))).reshape(6, 50, 2, 45, 2).mean(axis=(2, 4)),
        rtol=1e-6,
    )
    _validate(out, "0.5")


def test_reading_tasks_are_whole_stored_chunks_of_about_64_mib():
    """A terabyte-sized array with small stored chunks still reduces in few, aligned tasks."""
    from bigdecon.io._meta import task_chunks

    chunks = task_chunks((1000, 4096, 4096), (1, 64, 64), 2)
    assert all(c % u == 0 or c == n for c, u, n in zip(chunks, (1, 64, 64), (1000, 4096, 4096)))
    assert 16 * 2**20 < 2 * np.prod(chunks) <= 64 * 2**20
    n_tasks = np.prod([-(-n // c) for n, c in zip((1000, 4096, 4096), chunks)])
    assert n_tasks < 1e5  # (versus 4 million stored chunks)


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_statistics_chunks_follow_the_task_memory(tmp_path, dtype):
    """The statistics pass reads chunks sized from the task memory, straight from the store; same max and mean."""
    from bigdecon.io import write_image
    from bigdecon.passes.options import parse_run_options
    from bigdecon.passes.request import prepare_request, stats_chunk_bytes
    from bigdecon.passes.run import _source_stats

    rng = np.random.default_rng(3)
    image = (rng.random((32, 256, 256)) * 4000 + rng.random() * 1e-3).astype(dtype)
    if dtype == "uint16":
        image[5, 6, 7] = 65535  # a sum past float32's exact integers
    src = open_image(write_image(str(tmp_path / "raw.ome.zarr"), image, "zyx", chunks=(4, 64, 64)))
    default = prepare_request(src, *parse_run_options(dict(fwhm=2.0))).data
    small = prepare_request(src, *parse_run_options(dict(fwhm=2.0, task_memory=4 * 2**20)))
    assert stats_chunk_bytes(4 * 2**20) == 2**20
    assert default.chunksize == (32, 256, 256)  # 8 MiB as float32: one chunk under the 64 MiB cap
    assert np.prod(small.data.chunksize) * image.itemsize <= 2**20
    assert all(c % u == 0 for c, u in zip(small.data.chunksize, (4, 64, 64)))
    # Read at their own size from the store, not cut from the default chunks after reading them.
    assert not set(dict(small.data.dask)) & set(dict(default.dask))
    np.testing.assert_array_equal(small.data.compute(), image)
    got, want = _source_stats(small.data, small.layout), _source_stats(default, small.layout)
    assert got[0] == want[0] == [float(image.max())]
    if dtype == "uint16":  # integer sums are exact in float64: identical means
        assert got[1] == want[1]
    else:  # a float64 sum in another order: the same to its rounding
        np.testing.assert_allclose(got[1], want[1], rtol=1e-13)
    np.testing.assert_allclose(got[1], [image.astype(np.float64).mean() / image.max()], rtol=1e-12)


def test_tiff_reads_in_smaller_chunks_from_its_pages(tmp_path):
    """A TIFF's statistics chunks are whole pages read at their own size, not cut from larger reads."""
    image = _ramp((16, 64, 64), "uint16")
    tifffile.imwrite(tmp_path / "stack.tif", image)
    src = open_image(str(tmp_path / "stack.tif"))
    small = src.read_chunks(2 * 64 * 64 * 2)
    assert small.chunksize == (2, 64, 64) and src.data.chunksize == (16, 64, 64)
    assert not set(dict(small.dask)) & set(dict(src.data.dask))
    np.testing.assert_array_equal(small.compute(), image)
    assert src.read_chunks(2**30) is src.data  # never larger than it is


@pytest.mark.filterwarnings("ignore:.*stored as RGB with separate component planes:DeprecationWarning")
@pytest.mark.parametrize("shape", [(3, 24, 20), (4, 24, 20), (5, 3, 24, 20)])
def test_tiff_stack_of_planar_samples_reads_as_channels(tmp_path, shape):
    """tifffile.imwrite stores a (3|4, y, x) stack as planar RGB(A): its samples open as channels."""
    path = tmp_path / "stack.tif"
    stack = np.arange(np.prod(shape), dtype=np.uint16).reshape(shape)
    tifffile.imwrite(path, stack)
    with pytest.warns(BigdeconNotice, match="reading them as channels"):
        img = open_image(path)
    assert img.axes == (("z",) if len(shape) == 4 else ()) + ("c", "y", "x")
    assert img.shape == shape
    np.testing.assert_array_equal(np.asarray(img.data.compute()), stack)
