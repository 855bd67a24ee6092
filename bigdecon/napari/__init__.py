"""bigdecon in napari: a Deconvolve dock widget (preview a region, suggest, run) and sample data.

The widget and the sample data need napari (``pip install "bigdecon[napari]"``); the computations
behind them (:mod:`bigdecon.napari._core`) need only bigdecon.
"""
