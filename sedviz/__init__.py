"""sedviz: see the spectral dynamics of neural network training.

    import sedviz
    ds = sedviz.compute(["runs/a", "runs/b"], store="spectra.zarr")   # one streaming pass
    ds = sedviz.open("spectra.zarr")                                   # later
    ds = sedviz.load_demo()                                            # the shipped demo data

The Dataset's schema is in docs/schema.md; analyses live in :mod:`sedviz.analysis`, views in
:mod:`sedviz.plots` and :mod:`sedviz.widgets`.

Importing sedviz is cheap (no torch, xarray, scipy or HoloViews): every name below is loaded on
first use, so ``sedviz --help`` and ``sedviz info`` start at once. The ``ds.sed`` accessor is
registered as soon as xarray is imported, by whoever imports it.
"""
import importlib
import sys

from ._version import __version__
from .errors import CheckpointError, SedvizError, StoreError

# name -> (module, attribute or None for the module itself), imported on first access (PEP 562)
_LAZY = {
    "compute": ("sedviz.pipeline", "compute"),
    "load_demo": ("sedviz.data", "load_demo"),
    "demo_checkpoints": ("sedviz.data", "demo_checkpoints"),
    "Recorder": ("sedviz.recorder", "Recorder"),
    **{m: (f"sedviz.{m}", None) for m in ("analysis", "plots", "widgets", "report", "demo", "io", "layers",
                                          "integrations")},
}


def open(store, *, format=None):  # noqa: A001 - mirrors xarray.open_dataset / zarr.open
    """Open a store written by :func:`compute` (Zarr folder or netCDF file) as one Dataset.

    Lazy: only coordinates and metric logs are read now; record variables are read from disk when
    their values are used (``.values``, ``.load()``), so a store larger than memory opens at once.
    A store being written meanwhile shows its last committed state."""
    from .io.store import open_store

    return open_store(store, format).open()


def __getattr__(name):
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'sedviz' has no attribute {name!r}") from None
    value = importlib.import_module(module)
    if attr is not None:
        value = getattr(value, attr)
        globals()[name] = value  # a function: bind it so the next lookup is direct
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


class _AccessorAfterXarray:
    """Import hook: registers ``ds.sed`` (:mod:`sedviz.accessor`) right after xarray is imported.

    An import hook rather than an import, so that ``import sedviz`` does not pay for xarray and
    pandas; it removes itself at xarray's first import."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "xarray":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        import importlib.util

        spec = importlib.util.find_spec("xarray")
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisterAfter(spec.loader)
        return spec


class _RegisterAfter:
    """Wraps xarray's loader: run it, then register the accessor; everything else is the loader's."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        importlib.import_module("sedviz.accessor")

    def __getattr__(self, name):
        return getattr(self._loader, name)


if "xarray" in sys.modules:
    from . import accessor as _accessor  # noqa: F401  (registers ds.sed)
elif not any(isinstance(f, _AccessorAfterXarray) for f in sys.meta_path):
    sys.meta_path.insert(0, _AccessorAfterXarray())


__all__ = ["__version__", "compute", "open", "load_demo", "demo_checkpoints", "Recorder", "SedvizError",
           "CheckpointError", "StoreError"]
