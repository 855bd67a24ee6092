"""The example notebooks run top to bottom without errors (and are committed clean).

Each notebook is executed with ``nbclient`` in a kernel of the interpreter that
runs the tests, with a temporary working directory so that the data it writes
land there. Nothing is installed or registered: the kernel spec is ipykernel's
bundled one, whose command is ``sys.executable``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import ipykernel  # noqa: F401  (the test extra)
import nbclient
import nbformat
import pytest
from ipykernel.kernelspec import RESOURCES, get_kernel_dict
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from traitlets import default

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
# Per-cell limit: only a guard against hangs (the slowest notebook takes about a minute).
CELL_TIMEOUT = 300


class _ThisInterpreter(KernelSpecManager):
    """Resolve ``python3`` to ipykernel's bundled spec for ``sys.executable``.

    Without this, a ``python3`` kernel registered in the user's Jupyter folder
    (possibly for another Python) would take precedence.
    """

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        spec = get_kernel_dict()
        return KernelSpec(resource_dir=RESOURCES, **spec)


class _KernelManager(AsyncKernelManager):
    """nbclient's default manager, looking kernel specs up with :class:`_ThisInterpreter`."""

    @default("kernel_spec_manager")
    def _kernel_spec_manager_default(self) -> KernelSpecManager:
        return _ThisInterpreter(data_dir=self.data_dir)


def test_notebooks_found():
    names = [p.name for p in NOTEBOOKS]
    assert names == ["01_quickstart.ipynb", "02_large_volume.ipynb", "03_choosing_parameters.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_committed_clean(path):
    """No outputs or execution counts in the repository: small, reviewable diffs."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: cell {cell.get('id')} has outputs"
            assert cell.execution_count is None, f"{path.name}: cell {cell.get('id')} has an execution count"


def test_kernel_is_this_interpreter():
    km = _KernelManager(kernel_name="python3")
    assert isinstance(km.kernel_spec_manager, _ThisInterpreter)
    assert km.kernel_spec.argv[0] == sys.executable
    assert km.kernel_spec.language == "python"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, record_property):
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        kernel_manager_class=_KernelManager,  # nbclient owns it: the kernel is shut down after
        timeout=CELL_TIMEOUT,
        allow_errors=False,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first failing cell
    seconds = time.perf_counter() - start
    record_property("seconds", round(seconds, 1))
    print(f"{path.name}: {seconds:.1f} s")

    errors = [
        out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs if out.output_type == "error"
    ]
    assert not errors
    # Every code cell ran, and the figures were drawn.
    assert all(c.execution_count for c in nb.cells if c.cell_type == "code")
    assert any("image/png" in out.get("data", {}) for c in nb.cells if c.cell_type == "code" for out in c.outputs)
    if path.name == "02_large_volume.ipynb":
        # The progress is one live display (updated in place, ending at 100%), not printed lines.
        html = [
            out["data"]["text/html"]
            for c in nb.cells
            if c.cell_type == "code"
            for out in c.outputs
            if "text/html" in out.get("data", {}) and "<progress" in out["data"]["text/html"]
        ]
        widgets = [
            out
            for c in nb.cells
            if c.cell_type == "code"
            for out in c.outputs
            if "application/vnd.jupyter.widget-view+json" in out.get("data", {})
        ]
        assert widgets or (len(html) == 1 and "tasks (100%)" in html[0]), html
