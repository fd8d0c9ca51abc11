"""Analyses: pure functions on the sedviz Dataset, each returning labelled results.

Weight spectra (Yunis et al. 2024): :func:`prune_curves`, :func:`masks`, :func:`lmc`, :func:`perturb`
(``align`` and ``sva`` themselves come out of :func:`sedviz.compute`).
Trajectory (Xu 2026): :func:`edge`, :func:`phases`, :func:`lag_flip`, :func:`early_warning`, :func:`drift`.
"""
import importlib

_EXPORTS = {
    "edge": "edge", "phases": "edge",
    "lag_flip": "coupling", "granger": "coupling",
    "early_warning": "warning",
    "drift": "drift",
    "prune_curves": "pruning", "masks": "pruning",
    "lmc": "lmc", "perturb": "lmc",
    "alignment_diag": "alignment", "agreement_diag": "alignment",
}


def __getattr__(name):
    # Lazy so that `sedviz.compute` does not import scipy/pandas-heavy analysis modules.
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'sedviz.analysis' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
