"""sedviz: see the spectral dynamics of neural network training.

    import sedviz
    ds = sedviz.compute(["runs/a", "runs/b"], store="spectra.zarr")   # one streaming pass
    ds = sedviz.open("spectra.zarr")                                   # later
    ds = sedviz.load_demo()                                            # the shipped demo data

The Dataset's schema is in docs/schema.md; analyses live in :mod:`sedviz.analysis`, views in
:mod:`sedviz.plots` and :mod:`sedviz.widgets`.
"""
from ._version import __version__
from .errors import CheckpointError, SedvizError, StoreError
from .pipeline import compute
from . import accessor as _accessor  # registers ds.sed
from .io.store import open_store as _open_store
from .data import load_demo, demo_checkpoints


def open(store, *, format=None):  # noqa: A001 - mirrors xarray.open_dataset / zarr.open
    """Open a store written by :func:`compute` (Zarr folder or netCDF file) as one Dataset.

    Lazy: only coordinates and metric logs are read now; record variables are read from disk when
    their values are used (``.values``, ``.load()``), so a store larger than memory opens at once.
    A store being written meanwhile shows its last committed state."""
    return _open_store(store, format).open()


def __getattr__(name):
    if name == "Recorder": return __import__("sedviz.recorder", fromlist=["Recorder"]).Recorder  # noqa: E701 (lazy)
    # Subpackages with heavy imports (holoviews, ipywidgets) load on first use.
    if name in ("analysis", "plots", "widgets", "report", "demo"):
        import importlib

        return importlib.import_module(f"sedviz.{name}")
    raise AttributeError(f"module 'sedviz' has no attribute {name!r}")


__all__ = ["__version__", "compute", "open", "load_demo", "demo_checkpoints", "SedvizError", "CheckpointError", "StoreError"]
