"""Callbacks that record spectra live inside trainers (:class:`sedviz.Recorder` underneath).

- :mod:`sedviz.integrations.hf`: ``SedvizCallback`` for ``transformers.Trainer``.
- :mod:`sedviz.integrations.lightning`: ``SedvizCallback`` for ``lightning.Trainer``.

Each module imports its trainer library only when it is imported itself.
"""


def __getattr__(name):
    # ``sedviz.integrations.hf`` works after a plain ``import sedviz`` (each loads on first use)
    if name in ("hf", "lightning"):
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
