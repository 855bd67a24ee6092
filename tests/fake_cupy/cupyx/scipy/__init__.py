"""``cupyx.scipy`` of the CuPy stand-in: ``fft`` and ``ndimage``."""
