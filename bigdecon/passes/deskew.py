"""The deskew pass: a skewed stack (as recorded, or deconvolved in its own frame) -> a deskewed OME-Zarr.

One task per output block: it reads the input region the block needs (all of
the block's planes and lateral rows, and along the skew axis the columns
:func:`~bigdecon.solvers.deskew.source_span` names: its halo follows the
shear), deskews it (:func:`~bigdecon.solvers.deskew.deskew_block`, the
whole-volume arithmetic voxel for voxel) and writes exactly the output chunks
it owns. Completion goes to the run's ledger (stage ``deskew``), so a killed
run resumes where it stopped and a dead worker's tasks are simply re-run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..planner import Blocks, Layout, Region, _spans
from ..solvers.deskew import RotateGeometry, SkewGeometry, deskew_block, rotate_block, source_span
from .tasks import selected_index

__all__ = ["DeskewContext", "DeskewPlan", "deskew_plan", "skew_geometry"]

# Output blocks of the deskew pass (= its output chunks) are at most this long per axis.
_BLOCK_CAP = {"z": 64, "lateral": 512, "skew": 512}

# Bytes per voxel a deskew task holds: the window read (input dtype and its float32
# copy) and the output block with the per-plane gathers (a, b, weights), float32.
_IN_BYTES, _OUT_BYTES = 8, 8


def skew_geometry(
    scale: Mapping[str, float], units: Mapping[str, str], shape: Mapping[str, int], angle: float, axis: str
) -> SkewGeometry:
    """The shear of a stack from its metadata: the stage step is the z pixel size.

    Raises :class:`~bigdecon.errors.InputError` when there is no z axis or the
    metadata gives no physical pixel size along z or the skew axis.

    Examples
    --------
    >>> g = skew_geometry({"z": 0.4, "y": 0.104, "x": 0.104}, {"z": "micrometer", "x": "micrometer"},
    ...                   {"z": 100, "y": 64, "x": 256}, 31.5, "x")
    >>> g.out_width
    581
    """
    if "z" not in shape:
        raise InputError("skew_angle needs a z axis (the stage-scan planes); the input has none")
    if axis not in ("x", "y"):
        raise InputError(f"skew_axis must be x or y, got {axis!r}")
    for name in ("z", axis):
        size = scale.get(name)
        if not size or (size == 1.0 and name not in units):
            raise InputError(
                f"skew_angle needs the physical pixel size along {name} (the stage step for z), which the "
                "input's metadata does not give: write the pixel sizes into the OME-Zarr"
            )
    return SkewGeometry(float(angle), float(scale["z"]), float(scale[axis]), int(shape["z"]), int(shape[axis]))


@dataclass(frozen=True)
class DeskewPlan:
    """Output blocks of the deskew pass (its chunks too) over a deskewed layout."""

    layout: Layout  # the output's (deskewed) layout
    geometry: SkewGeometry
    axis: str  # "x" or "y"
    block: dict[str, int]  # output block per axis name (z, y, x)
    rotate: RotateGeometry | None = None  # rotated to the coverslip frame (isotropic voxels)

    def tasks(self) -> Blocks:
        """Every outer index x z blocks x y blocks x x blocks of the output."""
        lay = self.layout
        axes = [*lay.outer, lay.axes.index("z"), lay.y, lay.x]
        spans = [tuple((i, i + 1) for i in range(lay.shape[a])) for a in lay.outer]
        spans += [tuple(_spans(lay.shape[a], self.block[lay.axes[a]])) for a in axes[len(lay.outer) :]]
        return Blocks(tuple(axes), tuple(spans))

    @property
    def chunks(self) -> tuple[int, ...]:
        return tuple(self.block.get(a, 1) for a in self.layout.axes)

    def task_bytes(self) -> int:
        """Peak memory of the largest task: its sheared window and its output block."""
        b = self.block
        lateral = b["z"] * b["y"] * b["x"] / b[self.axis] / b["z"]
        if self.rotate is not None:  # the affine image of a block, unclipped
            zs = np.array([0.0, b["z"] - 1.0])[:, None]
            xs = np.array([0.0, b[self.axis] - 1.0])[None, :]
            k, i = self.rotate.recorded(zs, xs)
            window = lateral * (np.ptp(k) + 2) * (np.ptp(i) + 2)
            return int(_IN_BYTES * window + 3 * _OUT_BYTES * b["z"] * b["y"] * b["x"])  # + coordinates
        window = lateral * b["z"] * (b[self.axis] + b["z"] * abs(self.geometry.shear) + 2)
        return int(_IN_BYTES * window + _OUT_BYTES * b["z"] * b["y"] * b["x"])

    def summary(self) -> dict[str, Any]:
        g = self.geometry
        return {
            "rotated": self.rotate is not None,
            "deskew_block": dict(self.block),
            "deskew_tasks": len(self.tasks()),
            "deskew_memory_per_task_bytes": self.task_bytes(),
            "shear_px_per_plane": round(g.shear, 6),
            "deskewed_z_step": g.dx if self.rotate is not None else g.z_step,
        }


def deskew_plan(
    layout: Layout, geometry: SkewGeometry, axis: str, task_memory: int, rotate: bool = False
) -> DeskewPlan:
    """Blocks of at most 64 planes and 512 x 512 px, halved (z first) until a task fits ``task_memory``.

    ``layout`` is the deskewed output's.

    Examples
    --------
    >>> g = SkewGeometry(31.5, 0.4, 0.104, 2000, 2048)
    >>> p = deskew_plan(Layout(("z", "y", "x"), (2000, 2048, g.out_width)), g, "x", 512 * 2**20)
    >>> p.block, p.task_bytes() < 512 * 2**20
    ({'z': 64, 'y': 512, 'x': 512}, True)
    """
    lateral = "y" if axis == "x" else "x"
    size = {n: layout.shape[layout.axes.index(n)] for n in ("z", "y", "x")}
    block = {
        "z": min(size["z"], _BLOCK_CAP["z"]),
        lateral: min(size[lateral], _BLOCK_CAP["lateral"]),
        axis: min(size[axis], _BLOCK_CAP["skew"]),
    }
    turn_to = RotateGeometry(geometry) if rotate else None
    plan = DeskewPlan(layout, geometry, axis, block, turn_to)
    turn = 0
    while plan.task_bytes() > task_memory and max(block.values()) > 1:
        name = ("z", lateral, axis)[turn % 3]
        turn += 1
        block[name] = max(1, math.ceil(block[name] / 2))
        plan = DeskewPlan(layout, geometry, axis, dict(block), turn_to)
    return plan


@dataclass(frozen=True)
class DeskewContext:
    """What every deskew task receives (a few kB pickled)."""

    plan: DeskewPlan
    in_layout: Layout  # the skewed input's (selected) layout
    level: tuple[Any, ...]  # the input's stored level (ImageSource.level)
    selection: dict[int, Any]  # axis -> chosen channels (list) or first time point (int)
    output: str
    fill: tuple[float, ...]  # the voids' value, per processed channel
    run_id: str
    offset: float = 0.0  # camera offset subtracted from every read (clipped at 0): a deskew-only run's

    @property
    def layout(self) -> Layout:  # what the pass driver reads channels from
        return self.plan.layout


def _read(ctx: DeskewContext, region: Region) -> np.ndarray:
    """The input over ``region`` (input coordinates, every axis), straight from its store."""
    from ..io import read_region

    spans = [region[i] for i in range(len(ctx.in_layout.axes))]
    return read_region(ctx.level, selected_index(ctx.selection, spans), token=ctx.run_id)


def task_deskew(ctx: DeskewContext, region: Region) -> dict[str, float]:
    """Deskew one output block: read its sheared window, deskew, write the chunks it owns."""
    from ..io import write_block

    lay, plan = ctx.layout, ctx.plan
    fill = ctx.fill[lay.channel_of(tuple(region[a][0] for a in lay.outer))]
    z, s = lay.axes.index("z"), lay.axes.index(plan.axis)
    planes, cols = region[z], region[s]
    source = dict(region)
    if plan.rotate is not None:
        source[z], source[s] = plan.rotate.window(planes, cols)
    else:
        source[s] = source_span(plan.geometry, planes, cols)
    empty = any(b <= a for a, b in source.values())
    window = np.zeros(_shape(source), np.float32) if empty else _read(ctx, source)
    if ctx.offset:  # a global constant, as every pass subtracts it: blocks still equal the whole
        window = np.maximum(window.astype(np.float32) - np.float32(ctx.offset), 0)
    # (outer..., z, a, b) -> (z, lateral, skew), the skew axis last
    solver = window[tuple(0 if i in lay.outer else slice(None) for i in range(window.ndim))]
    inner = [lay.axes[i] for i in range(len(lay.axes)) if i not in lay.outer]
    order = [inner.index(n) for n in ("z", "x" if plan.axis == "y" else "y", plan.axis)]  # the skew axis last
    solver = np.transpose(solver, order)
    if plan.rotate is not None:
        origin = (source[z][0], source[s][0])
        out = rotate_block(solver, plan.rotate, planes, cols, origin, fill)
    else:
        out = deskew_block(solver, plan.geometry, planes, cols, source[s][0], fill)
    out = np.transpose(out, np.argsort(order))
    for ax in lay.outer:
        out = np.expand_dims(out, ax)
    write_block(ctx.output, tuple(slice(*region[i]) for i in range(len(lay.axes))), out)
    return {"max": float(out.max()) if out.size else 0.0}


def _shape(region: Region) -> tuple[int, ...]:
    return tuple(b - a for _, (a, b) in sorted(region.items()))
