#!/usr/bin/env bash
# Regenerate deploy/daskjob-example.yaml (from `bigdecon submit --dry-run`, with the
# generated TLS Secret's data masked) and deploy/rbac.yaml.  With --check, compare instead and exit 1 on a difference.
# Needs the `bigdecon` command (pip install -e '.[k8s]') on PATH.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

example() {
    bigdecon submit \
        s3://my-bucket/raw/embryo.ome.zarr s3://my-bucket/decon/embryo.ome.zarr \
        --fwhm 3 \
        --name embryo-decon \
        --image registry.example.org/bigdecon:0.1.0-cuda \
        --workers 4 --gpus-per-worker 1 --worker-memory 32Gi --worker-cpu 8 \
        --namespace bigdecon --service-account bigdecon --storage-secret bigdecon-s3 \
        --dry-run | python -m bigdecon.k8s mask-secrets   # each run makes a new TLS key
}

rbac() {
    python -m bigdecon.k8s rbac bigdecon
}

status=0
for pair in "daskjob-example.yaml:example" "rbac.yaml:rbac"; do
    file="$here/${pair%%:*}"
    fn="${pair##*:}"
    if [[ "${1:-}" == "--check" ]]; then
        if ! diff -u "$file" <("$fn") >&2; then
            echo "deploy/${pair%%:*} is stale: run deploy/regenerate.sh" >&2
            status=1
        fi
    else
        "$fn" > "$file"
        echo "wrote deploy/${pair%%:*}"
    fi
done
exit $status
