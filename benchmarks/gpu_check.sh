#!/usr/bin/env bash
# Everything bigdecon's GPU path needs measured, in one run on a machine with an
# NVIDIA GPU (~5-8 minutes): versions, nvidia-smi, the GPU tests (every solver
# CuPy vs NumPy, an out-of-core run on dask-cuda workers vs the CPU result, the
# Kubernetes GPU worker command), then the GPU rows of benchmarks/bench_solvers.py
# (speed, peak GPU memory, fraction of the memory bandwidth). Output goes to the
# terminal and to $OUT/gpu_check.log (/tmp/bigdecon-gpu-check/ when OUT is unset), the
# benchmark rows also to bench_gpu.json beside it.
#
#   bash benchmarks/gpu_check.sh
#
# Installing: with wheels in .whl/ (made by benchmarks/gpu_wheels.sh, for a GPU
# machine without a package registry) they are installed into /tmp/bigdecon-site
# with --no-index; otherwise, if bigdecon's GPU dependencies do not import, pip
# installs '.[gpu,test]' (or '.[test]' plus dask-cuda where a CuPy is already
# there) with constraints.txt less its dask/distributed pins (dask-cuda pins its
# own dask). Set PYTHON to pick the interpreter, WHEELS for another wheel folder.
set -uo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
out_dir="${OUT:-/tmp/bigdecon-gpu-check}"
mkdir -p "$out_dir"
log="$out_dir/gpu_check.log"
exec > >(tee "$log") 2>&1
export PYTHONUNBUFFERED=1
py="${PYTHON:-python3}"
wheels="${WHEELS:-$repo/.whl}"
started=$SECONDS
step() { printf '\n=== %s (%ds)\n' "$*" "$((SECONDS - started))"; }

step "set-up"
if compgen -G "$wheels/*.whl" >/dev/null; then
    echo "installing $(ls "$wheels"/*.whl | wc -l) wheels from $wheels into /tmp/bigdecon-site"
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/bigdecon-site "$wheels"/*.whl || { echo "wheel install failed"; exit 1; }
    export PYTHONPATH="/tmp/bigdecon-site${PYTHONPATH:+:$PYTHONPATH}"
elif ! "$py" -c "import bigdecon.passes, cupy, dask_cuda" 2>/dev/null; then
    grep -vE '^(dask|distributed)==' constraints.txt >/tmp/bigdecon-constraints-gpu.txt
    if "$py" -c "import cupy" 2>/dev/null; then
        extras=(-e ".[test]" dask-cuda)  # keep the CuPy that is there (it may be cupy-cuda13x)
    else
        extras=(-e ".[gpu,test]")
    fi
    "$py" -m pip install -q "${extras[@]}" -c /tmp/bigdecon-constraints-gpu.txt || { echo "pip install failed"; exit 1; }
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"

step "versions"
"$py" - <<'PY'
import importlib, platform, sys
print("python", platform.python_version(), sys.executable)
for name in ("bigdecon", "numpy", "scipy", "numba", "dask", "distributed", "dask_cuda", "zarr", "pywt", "cupy"):
    try:
        mod = importlib.import_module(name)
        print(f"  {name:<12} {getattr(mod, '__version__', '?'):<12} {getattr(mod, '__file__', '')}")
    except Exception as exc:  # noqa: BLE001
        print(f"  {name:<12} NOT IMPORTABLE: {type(exc).__name__}: {exc}")
try:
    import cupy
    rt = cupy.cuda.runtime
    print("  CUDA runtime", rt.runtimeGetVersion(), "driver", rt.driverGetVersion(), "devices", rt.getDeviceCount())
    cupy.show_config()
except Exception as exc:  # noqa: BLE001
    print("  CuPy/CUDA not usable:", type(exc).__name__, exc)
PY

step "nvidia-smi"
nvidia-smi || echo "nvidia-smi failed"
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory,clocks.max.sm,driver_version --format=csv || true

step "GPU tests"
gpu_tests=$(grep -l 'pytest.mark.gpu' tests/test_*.py)
timeout 240 "$py" -m pytest -m gpu -q -rs -p no:cacheprovider --durations=10 $gpu_tests
tests_rc=$?

step "GPU benchmark"
timeout 240 "$py" benchmarks/bench_solvers.py --gpu-only --json "$out_dir/bench_gpu.json"
bench_rc=$?

step "done"
nvidia-smi --query-gpu=memory.used,memory.total --format=csv || true
echo "GPU tests exit $tests_rc, benchmark exit $bench_rc (124 = timed out); log $log"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
