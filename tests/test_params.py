"""The parameter table (bigdecon.params.PARAMETERS) is the one source of names, defaults and checks."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import numpy as np
import pytest

import bigdecon
from bigdecon import InputError
from bigdecon.cli import build_parser, resolve_options
from bigdecon.io import OmeZarrWriter
from bigdecon.params import (
    DEFAULT_REFRACTIVE_INDEX,
    DEFAULTS,
    GPUS_PER_WORKER,
    JOB_SCHEDULER_TIMEOUT,
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


# Arguments whose name is not the model's: (function, argument) -> the model parameter (and for deconv_iters,
# the deconv_type whose default it is).
SIGNATURE_ALIASES = {
    "bigdecon.solvers.sparse_hessian.sparse_hessian": {"iterations": "sparse_iters"},
    "bigdecon.solvers.richardson_lucy.richardson_lucy": {"iterations": ("deconv_iters", 1)},
    "bigdecon.solvers.landweber.landweber": {"iterations": ("deconv_iters", 2)},
    "bigdecon.solvers.wiener_butterworth.rl_wiener_butterworth": {
        "iterations": ("deconv_iters", 3), "alpha": "wb_alpha", "beta": "wb_beta", "order": "wb_order"
    },
    **{
        f"bigdecon.solvers.wiener_butterworth.{f}": {"alpha": "wb_alpha", "beta": "wb_beta", "order": "wb_order"}
        for f in ("wiener_butterworth_backprojector", "backprojector_kernel", "mirror_backprojector")
    },
    **{
        f"bigdecon.hpc.{f}": {"cores": "worker_cpu", "memory": "worker_memory"}
        for f in ("jobqueue_kwargs", "make_jobqueue_cluster")
    },
}  # fmt: skip
# Defaults the model states as a rule beside the parameter (its None means "depends on the target").
SIGNATURE_RULES = {
    "gpus_per_worker": {"bigdecon.hpc": GPUS_PER_WORKER["hpc"], "bigdecon.k8s": GPUS_PER_WORKER["kubernetes"]},
    "scheduler_timeout": {"bigdecon.k8s": JOB_SCHEDULER_TIMEOUT},
    "refractive_index": {"bigdecon.cli.psf": DEFAULT_REFRACTIVE_INDEX},  # the value of the model's None
}
# Arguments that share a model parameter's name but are another thing, each with the reason.
NOT_THE_MODEL = {
    **{
        (f"bigdecon.data.{f}", a): "a phantom's own blur and background level, not the method's"
        for f in ("filaments_timelapse", "beads_volume", "rings_image", "widefield_volume")
        for a in ("fwhm", "background")
    },
    ("bigdecon.cluster.make_client", "gpus"): "a library call starts CPU workers unless asked; "
    "the CLI's auto (None) goes through cluster.worker_choice",
    ("bigdecon.cli._common.client_for", "gpus"): "given worker_choice's decision, never auto",
    ("bigdecon.cli.options.Parser.parse_known_args", "namespace"): "argparse's namespace",
    ("bigdecon.hpc.solver_threads", "threads_per_worker"): "a batch job's worker runs one thread per process",
    ("bigdecon.hpc.jobqueue_kwargs", "threads_per_worker"): "a batch job's worker runs one thread per process",
    ("bigdecon.hpc.make_jobqueue_cluster", "workers"): "0: start the cluster without jobs; the caller scales it",
    ("bigdecon.hpc.slurm_cluster", "workers"): "0: start the cluster without jobs; the caller scales it",
    ("bigdecon.io._meta.ImageSource.__init__", "channels"): "an opened input's channels, not a selection",
    ("bigdecon.io._meta.ImageSource.__init__", "ngff_version"): "an opened input's version (None: a TIFF)",
    ("bigdecon.io._meta.multiscales_metadata", "name"): "the image's name in its metadata",
    ("bigdecon.io._meta.voxel_size_um", "axes"): "the axes to report, not an override of the input's",
    ("bigdecon.k8s.rbac_manifests", "service_account"): "the account these manifests create",
    ("bigdecon.params.parse_memory", "name"): "the parameter named in errors",
    ("bigdecon.passes.deskew.DeskewPlan.__init__", "rotate"): "the rotation's geometry (None: not rotated)",
    ("bigdecon.passes.scratch.Watch.open", "background"): "whether to watch from a thread",
    **{
        (f, "psf_model"): "None: gaussian, or widefield with na/wavelength (params.psf_source)"
        for f in ("bigdecon.passes.run.deconvolve", "bigdecon.passes.options.RunOptions.__init__")
    },
    **{
        (f, "psf_energy"): "None: the model's default, resolved when the options are checked"
        for f in (
            "bigdecon.passes.run.deconvolve",
            "bigdecon.passes.options.RunOptions.__init__",
            "bigdecon.pipeline.sparse_deconvolve",
        )
    },
    ("bigdecon.solvers.richardson_lucy.richardson_lucy", "alpha"): "the acceleration's step rule",
}


def _package_functions():
    """``(qualified name, function)`` of every public function and method defined in the package."""
    for info in pkgutil.walk_packages(bigdecon.__path__, "bigdecon."):
        if info.name.endswith("__main__") or info.name.startswith("bigdecon.napari"):
            continue  # running the CLI; the napari plugin needs napari
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj):
                yield f"{module.__name__}.{name}", obj
            elif inspect.isclass(obj):
                for method, f in vars(obj).items():
                    if inspect.isfunction(f) and (method == "__init__" or not method.startswith("_")):
                        yield f"{module.__name__}.{name}.{method}", f


def _expected_default(function, argument):
    """The model's default of ``argument`` of ``function``, or None where it takes no model parameter."""
    target = SIGNATURE_ALIASES.get(function, {}).get(argument, argument if argument in PARAMETERS else None)
    if target is None or (function, argument) in NOT_THE_MODEL:
        return None
    if isinstance(target, tuple):  # deconv_iters of one deconv_type
        return (target[0], resolve_deconv_iters(None, target[1]))
    for prefix, value in SIGNATURE_RULES.get(target, {}).items():
        if function.startswith(prefix + "."):
            return (target, value)
    return (target, PARAMETERS[target].default)


def _same(target, got, expected):
    empty = (None, (), [])
    if got in empty and expected in empty:
        return True
    if got is None or expected is None:
        return False
    convert = PARAMETERS[target].convert
    return convert(got) == convert(expected)


def test_every_public_signature_default_is_the_models():
    """Every public function or method of the package that takes a model parameter (by its name, or a
    solver's short name for it) defaults to the model's value."""
    checked, wrong, used = [], [], set()
    for function, f in _package_functions():
        for argument in inspect.signature(f).parameters.values():
            if (function, argument.name) in NOT_THE_MODEL:
                used.add((function, argument.name))
            expected = _expected_default(function, argument.name)
            if expected is None or argument.default is inspect.Parameter.empty:
                continue
            target, value = expected
            checked.append(f"{function}({argument.name})")
            if not _same(target, argument.default, value):
                wrong.append(f"{function}({argument.name}={argument.default!r}): the model says {value!r}")
    assert not wrong, "\n".join(wrong)
    assert used == set(NOT_THE_MODEL), set(NOT_THE_MODEL) - used  # no exception outlives its function
    for function in ("sparse_hessian.sparse_hessian(iterations)", "landweber.landweber", "k8s.build_daskjob"):
        assert any(function in c for c in checked), function
    assert len(checked) >= 100, len(checked)


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
