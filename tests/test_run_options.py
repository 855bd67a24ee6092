"""The run's options: keywords at the public edge, Params + a frozen RunOptions below it (issue 26, item 5)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from helpers import filaments

import bigdecon
from bigdecon.errors import InputError
from bigdecon.io import open_image, write_image
from bigdecon.params import Params
from bigdecon.passes.options import RunOptions, parse_run_options
from bigdecon.passes.request import prepare_request
from bigdecon.passes.run import plan_run, run_deconvolution


def test_keywords_split_into_the_method_and_the_options():
    params, options = parse_run_options(
        {"fwhm": {0: 3, 1: 4}, "sparse_iters": 20, "deconv_type": 3, "channels": [1], "offset": "AUTO"}
    )
    assert isinstance(params, Params) and params.sparse_iters == 20
    assert params.deconv_iters == 2  # the number for deconv_type 3, resolved once
    assert params.fwhm is None  # the PSF stays an option until it is resolved per channel
    assert options.fwhm == {0: 3, 1: 4} and options.channels == [1] and options.offset == "auto"
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.resume = True  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fwhm": 3, "sparse_iter": 5}, "unknown parameter\\(s\\): sparse_iter"),
        ({"fwhm": 3, "device": "tpu"}, "device must be one of auto, cpu, gpu"),
        ({"fwhm": 3, "ngff_version": "0.3"}, "ngff_version must be one of 0.4, 0.5"),
        ({"fwhm": 3, "offset": -1}, "offset must be a number of counts"),
        ({"fwhm": 3, "axes": "tq"}, "axes"),
    ],
)
def test_bad_options_are_refused_before_the_input_is_opened(kwargs, message):
    with pytest.raises(InputError, match=message):
        parse_run_options(kwargs)
    if "sparse_iter" in kwargs:
        return  # the public edge's signature refuses it itself (TypeError)
    with pytest.raises(InputError, match=message):  # the public edge: nothing is opened, nothing written
        bigdecon.deconvolve("/nonexistent/raw.ome.zarr", "/nonexistent/out.ome.zarr", **kwargs)


def test_params_and_options_run_as_the_keywords_do(tmp_path):
    raw, _ = filaments((6, 64, 64), seed=3)
    source = write_image(str(tmp_path / "raw.ome.zarr"), raw, "tyx")
    kwargs = {"fwhm": 3.0, "sparse_iters": 10, "chunks": {"t": 6, "y": 32, "x": 32}}
    by_keywords = bigdecon.deconvolve(source, str(tmp_path / "a.ome.zarr"), **kwargs)
    params, options = parse_run_options(kwargs)
    src = open_image(source)
    planned = plan_run(source, params, options, src=src)
    by_pair = run_deconvolution(source, str(tmp_path / "b.ome.zarr"), params, options, src=src)
    assert planned["n_tasks"] == by_pair["chunks"] == by_keywords["chunks"]
    a = open_image(by_keywords["output"]).data.compute()
    b = open_image(by_pair["output"]).data.compute()
    assert a.dtype == np.float32 and a.max() > 0
    np.testing.assert_array_equal(a, b)
    request = prepare_request(open_image(source), params, options)
    assert request.params.fwhm == (3.0, 3.0) and request.layout.shape == raw.shape
    assert dataclasses.replace(options, resume=True).resume and not options.resume
    assert isinstance(options, RunOptions)
