"""The parameter table (bigdecon.params.PARAMETERS) is the one source of names, defaults and checks."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import bigdecon
from bigdecon import InputError
from bigdecon.cli import build_parser, resolve_options
from bigdecon.io import OmeZarrWriter
from bigdecon.params import (
    DEFAULTS,
    PARAMETERS,
    SUBMIT_GROUPS,
    Params,
    check_output_dtype,
    parse_memory,
    parse_psf_files,
    parse_psf_size,
    parse_timepoints,
    resolve_deconv_iters,
)

METHOD = [name for name, p in PARAMETERS.items() if p.method]
RUN_OPTIONS = [
    "channels",
    "timepoints",
    "chunks",
    "depth",
    "output_dtype",
    "ngff_version",
    "resume",
    "overwrite",
    "work_dir",
]


@pytest.mark.parametrize("function", ["sparse_deconvolve", "deconvolve"])
def test_public_signatures_match_the_model(function):
    """Every method parameter is a keyword of the public functions, with the model's default."""
    signature = inspect.signature(getattr(bigdecon, function))
    expected = [n for n in METHOD if n != "resolution" or function == "deconvolve"]
    if function == "deconvolve":
        expected += [*RUN_OPTIONS, "device"]
    for name in expected:
        assert name in signature.parameters, (function, name)
        assert signature.parameters[name].default == PARAMETERS[name].default, (function, name)


def test_params_defaults_and_checks_come_from_the_model():
    for name in Params.__dataclass_fields__:
        if name in PARAMETERS and name not in ("fwhm", "psf"):
            # deconv_iters' model default is None: the number for the deconv_type, resolved on construction.
            expected = PARAMETERS[name].default
            if name == "deconv_iters":
                expected = resolve_deconv_iters(expected, DEFAULTS.deconv_type)
            assert getattr(DEFAULTS, name) == expected, name
    with pytest.raises(InputError, match="background must be one of 0-5, got 9"):
        Params.from_kwargs(fwhm=3, background=9)
    with pytest.raises(InputError, match="background must be one of 0-5, got 9"):
        PARAMETERS["background"].parse("9")  # the CLI's rule is the same rule


def test_cli_defaults_and_flags_come_from_the_model():
    parser = build_parser()
    resolved = resolve_options(parser.parse_args(["run", "i", "o", "--fwhm", "3"]))
    for name, p in PARAMETERS.items():
        if p.group in SUBMIT_GROUPS:  # submit's cluster: not resolved (nor recorded) by run
            assert name not in resolved, name
        elif name != "fwhm":
            default = resolve_deconv_iters(None, resolved["deconv_type"]) if name == "deconv_iters" else p.default
            assert resolved[name] == default, name
    helps = {cmd: parser.parse_args([cmd, "x", "y"] if cmd != "info" else [cmd, "x"]) for cmd in ("run", "info")}
    for cmd, args in helps.items():
        for name, p in PARAMETERS.items():
            assert hasattr(args, name) is (cmd in p.commands), (cmd, name)


def test_submit_options_are_the_model(tmp_path, capsys):
    """Every option of submit, status and logs is a Parameter: its flag, default and check, and its config key."""
    import yaml

    from bigdecon import cli

    parser = build_parser()
    actions = {
        cmd: {a.dest: a for a in parser._subparsers._group_actions[0].choices[cmd]._actions}
        for cmd in ("submit", "status", "logs")
    }
    own = {"help", "input", "output", "name", "config"}  # positionals, --config
    for cmd, by_dest in actions.items():
        modelled = {n for n, p in PARAMETERS.items() if cmd in p.commands}
        assert set(by_dest) - own <= modelled, (cmd, set(by_dest) - own - modelled)
        assert all(by_dest[n].default is None for n in modelled if n in by_dest), cmd  # the model's defaults
    assert {n for n, p in PARAMETERS.items() if p.group in ("submit", "kubernetes", "hpc")} >= {
        "worker_memory", "walltime", "image", "namespace", "hpc", "job_extra", "kubeconfig", "tail"
    }  # fmt: skip

    # One memory value, two targets: a Kubernetes quantity and the batch system's request.
    argv = ["submit", "s3://b/i.zarr", "s3://b/o.zarr", "--fwhm", "3", "--image", "img:1-cuda", "--dry-run"]
    assert cli.main(argv) == 0
    job = list(yaml.safe_load_all(capsys.readouterr().out))[-1]
    workers = job["spec"]["cluster"]["spec"]["worker"]["spec"]["containers"][0]["resources"]
    assert workers["limits"]["memory"] == "32Gi" == f"{2**-30 * parse_memory(PARAMETERS['worker_memory'].default):g}Gi"
    config = tmp_path / "job.toml"
    config.write_text('worker_memory = "48Gi"\nwalltime = "02:30:00"\njob_extra = ["--qos=high"]\n')
    slurm = ["submit", "/scratch/i.zarr", "/scratch/o.zarr", "--fwhm", "3", "--slurm", "--config", str(config)]
    assert cli.main([*slurm, "--dry-run"]) == 0
    script = capsys.readouterr().out
    assert "#SBATCH --mem=48G" in script and "#SBATCH -t 02:30:00" in script and "#SBATCH --qos=high" in script
    # ... and the same checks as every other option: one line, exit 2.
    for bad, words in (("--worker-memory=lots", "worker_memory must be a size"), ("--walltime=2h", "walltime must")):
        assert cli.main([*argv, bad]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err


def test_config_file_keys_are_the_model(tmp_path):
    parser = build_parser()
    config = tmp_path / "c.toml"
    config.write_text("".join(f"{k} = {v!r}\n" for k, v in [("sparse_iters", 5), ("ngff_version", "0.4")]))
    resolved = resolve_options(parser.parse_args(["run", "i", "o", "--config", str(config)]))
    assert resolved["sparse_iters"] == 5 and resolved["ngff_version"] == "0.4"
    config.write_text("sparse_iter = 5\n")
    with pytest.raises(InputError, match="unknown option.*sparse_iter"):
        resolve_options(parser.parse_args(["run", "i", "o", "--config", str(config)]))


@pytest.mark.parametrize(
    "span, n, expected",
    [("0:10", 10, (0, 10)), ("2:-1", 10, (2, 9)), ("-3:", 10, (7, 10)), (":4", 10, (0, 4)), ((1, 3), 5, (1, 3))],
)
def test_parse_timepoints(span, n, expected):
    assert parse_timepoints(span, n) == expected


@pytest.mark.parametrize(
    "span, words",
    [
        ("4:2", "timepoints 4:2 select nothing (empty or reversed range; the input has 0:10)"),
        ("3:3", "empty or reversed"),
        ("8:-5", "empty or reversed"),
        ("4:99", "timepoints 4:99 outside 0:10"),
        ("2-4", "timepoints must look like A:B"),
        ("a:b", "timepoints must look like A:B"),
    ],
)
def test_parse_timepoints_refuses(span, words):
    with pytest.raises(InputError) as info:
        parse_timepoints(span, 10)
    assert words in str(info.value)


def test_per_channel_values():
    fwhm = parse_psf_size("fwhm")
    assert fwhm("3") == [3.0] and fwhm(["2", "3,3"]) == [2.0, 3.0, 3.0]
    assert fwhm("1=4.2,4.2 0=3") == {0: [3.0], 1: [4.2, 4.2]}
    assert fwhm({"1": 2, 0: [3, 3]}) == {0: [3.0, 3.0], 1: [2.0]}
    with pytest.raises(InputError, match="C=VALUES"):
        fwhm(["3", "1=4"])
    with pytest.raises(InputError, match="channel 1 given twice"):
        fwhm("1=3 1=4")
    assert parse_psf_files("my psf.tif") == "my psf.tif"
    assert parse_psf_files("0=a.tif 1=b.npy") == parse_psf_files(["1=b.npy", "0=a.tif"]) == {0: "a.tif", 1: "b.npy"}
    with pytest.raises(InputError, match="not both"):
        parse_psf_files(["a.tif", "1=b.npy"])


@pytest.mark.parametrize("dtype", ["float32", "float64", "uint8", "uint16", "int32"])
def test_output_dtypes_accepted(dtype):
    assert check_output_dtype(dtype) == np.dtype(dtype)


@pytest.mark.parametrize("dtype", ["float16", "complex64", "bool"])
def test_output_dtypes_refused_everywhere(dtype, tmp_path):
    """One rule for the CLI, deconvolve and the OME-Zarr writer."""
    with pytest.raises(InputError, match="output_dtype must be float32, float64 or an integer type"):
        check_output_dtype(dtype)
    with pytest.raises(InputError, match="output_dtype"):
        PARAMETERS["output_dtype"].parse(dtype)
    with pytest.raises(InputError, match="output_dtype"):
        OmeZarrWriter(str(tmp_path / "o.zarr"), shape=(8, 8), axes="yx", chunks=(8, 8), dtype=dtype)
    assert not (tmp_path / "o.zarr").exists()
    with pytest.raises(InputError, match="output_dtype"):
        bigdecon.deconvolve(str(tmp_path / "missing.zarr"), str(tmp_path / "out.zarr"), fwhm=3, output_dtype=dtype)
