"""Analyses: pure functions on the sedviz Dataset, each returning labelled results.

Weight spectra (Yunis et al. 2024): :func:`prune_curves`, :func:`masks`, :func:`lmc`, :func:`perturb`
(``align`` and ``sva`` themselves come out of :func:`sedviz.compute`; the math is in
:mod:`sedviz.analysis.alignment`).
Trajectory (Xu 2026): :func:`edge`, :func:`phases`, :func:`lag_flip`, :func:`granger`,
:func:`early_warning`, :func:`drift`.
"""
# Eager imports: several modules share their function's name (edge, drift, lmc), and a lazy
# lookup would hand back the module once anything had imported it.
from .alignment import agreement_diag, agreement_matrix, alignment_diag, alignment_matrix, pair_diag, score
from .coupling import granger, lag_flip
from .drift import drift
from .edge import edge, phases
from .lmc import barrier, interpolate, lmc, perturb
from .pruning import magnitude_masks, masks, prune_curves, svd_prune
from .warning import early_warning

__all__ = [
    "agreement_diag", "agreement_matrix", "alignment_diag", "alignment_matrix", "barrier", "drift",
    "early_warning", "edge", "granger", "interpolate", "lag_flip", "lmc", "magnitude_masks", "masks",
    "pair_diag", "perturb", "phases", "prune_curves", "score", "svd_prune",
]
