#!/usr/bin/env bash
# Download the wheels that benchmarks/gpu_check.sh installs on a GPU machine that
# has no package registry: this workplace's device machine (Python 3.12, with
# CuPy, NumPy, SciPy, Numba, pandas, pytest... but no Dask, Zarr or dask-cuda).
# Run it here, where pip reaches PyPI:
#
#   bash benchmarks/gpu_wheels.sh      # -> .whl/ (~18 MB; git ignores it)
#
# then send .whl along with the repository (the device tool's `carry: [".whl"]`).
# Versions: constraints.txt's pins, except dask and distributed, which follow
# dask-cuda's rapids-dask-dependency (dask-cuda 26.10 -> 2026.7.1), as in the
# CUDA image (deploy/Dockerfile.cuda).
set -euo pipefail
cd "$(dirname "$0")/.."

DASK_CUDA="${DASK_CUDA:-26.10.0}"
PY_VERSION="${GPU_PYTHON_VERSION:-3.12}"
dest=.whl
exclude="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$exclude")"
grep -qxF '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"
rm -rf "$dest" && mkdir -p "$dest"

download() {
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
        --python-version "$PY_VERSION" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 \
        -d "$dest" "$@"
}
pin() {  # NAME -> NAME==VERSION from constraints.txt (or NAME when not pinned there)
    grep -iE "^$1==" constraints.txt | head -1 || echo "$1"
}

# dask-cuda and the dask release its rapids-dask-dependency pins.
download "dask-cuda==$DASK_CUDA" "rapids-dask-dependency==${DASK_CUDA%.*}.*"
dask_pin="$(python3 - "$dest" <<'PY'
import glob, re, sys, zipfile
(whl,) = glob.glob(f"{sys.argv[1]}/rapids_dask_dependency-*.whl")
meta = zipfile.ZipFile(whl).read(next(n for n in zipfile.ZipFile(whl).namelist() if n.endswith("METADATA"))).decode()
m = re.search(r"^Requires-Dist: dask\s*([^;\n]*)", meta, re.M)
low = re.search(r">=\s*([\w.]+)", m.group(1))
print(low.group(1))
PY
)"
echo "dask-cuda $DASK_CUDA pins dask/distributed $dask_pin"

# bigdecon's and dask's runtime needs that the device image lacks (it has numpy, scipy,
# numba, tifffile, psutil, pyyaml, click, cloudpickle, fsspec, toolz, msgpack, jinja2,
# sortedcontainers, packaging, pandas, nvidia-ml-py, cuda-core, pytest).
download "dask==$dask_pin" "distributed==$dask_pin" \
    $(for p in partd locket tblib tornado zict zarr numcodecs donfig google-crc32c PyWavelets; do pin "$p"; done)

ls -1 "$dest"
du -sh "$dest"
