"""``cupyx`` of the CuPy stand-in (tests/fake_cupy/cupy): only ``cupyx.scipy``."""
