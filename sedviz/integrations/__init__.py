"""Callbacks that record spectra live inside trainers (:class:`sedviz.Recorder` underneath).

- :mod:`sedviz.integrations.hf`: ``SedvizCallback`` for ``transformers.Trainer``.
- :mod:`sedviz.integrations.lightning`: ``SedvizCallback`` for ``lightning.Trainer``.

Each module imports its trainer library only when it is imported itself.
"""
