"""Example data shipped inside the package (like ArviZ's example datasets).

``demo.nc`` is the store of the demo run (:mod:`sedviz.demo`: modular-addition grokking with
weight decay 1.0, and its weight-decay-0 control), computed by ``sedviz demo``; ``demo_final/``
holds the final checkpoint of each run, for pruning and connectivity without retraining.
"""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
DEMO_STORE = HERE / "demo.nc"
DEMO_FINAL = HERE / "demo_final"


def load_demo():
    """The demo Dataset (both runs), instantly, from the copy shipped in the package."""
    import xarray as xr

    from ..errors import SedvizError

    if not DEMO_STORE.exists():
        raise SedvizError(
            f"{DEMO_STORE} is missing from this installation; rebuild it with `sedviz demo --ship` from a source checkout"
        )
    from ..io.store import open_store

    return open_store(DEMO_STORE).open()


def demo_checkpoints() -> dict[str, Path]:
    """run name -> path of that run's final checkpoint shipped with the package."""
    return {p.parent.name: p for p in sorted(DEMO_FINAL.glob("*/*.pt"))}
