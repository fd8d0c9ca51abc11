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
    import json

    from ..io.store import open_store

    ds = open_store(DEMO_STORE).open()
    # Shipped checkpoint paths are relative to this folder: make them usable here.
    ckpts = json.loads(ds.attrs.get("checkpoints", "{}"))
    ds.attrs["checkpoints"] = json.dumps({run: {step: str(HERE / p) for step, p in m.items()} for run, m in ckpts.items()})
    return ds


def demo_checkpoints() -> dict[str, Path]:
    """run name -> path of that run's final checkpoint shipped with the package."""
    return {p.parent.name: p for p in sorted(DEMO_FINAL.glob("*/*.pt"))}


def ship_demo(ds, run_dirs) -> None:
    """Refresh the shipped demo data from a freshly computed demo (developers: `sedviz demo --ship`).

    Writes ``demo.nc`` (the whole Dataset) and copies each run's final checkpoint, plus its
    ``config.json``, into ``demo_final/<run>/``. Checkpoint paths in the attrs become relative.
    """
    import json
    import shutil

    from ..io.store import NetCDFStore

    DEMO_FINAL.mkdir(exist_ok=True)
    ckpts = {}
    for run_dir in map(Path, run_dirs):
        finals = sorted(run_dir.glob("step_*.pt"))
        dest = DEMO_FINAL / run_dir.name
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir()
        shutil.copy2(finals[-1], dest / finals[-1].name)
        for extra in ("config.json", "metrics.csv"):
            if (run_dir / extra).exists():
                shutil.copy2(run_dir / extra, dest / extra)
        step = str(int(finals[-1].stem.split("_")[-1]))
        ckpts[run_dir.name] = {step: f"demo_final/{run_dir.name}/{finals[-1].name}"}
    out = ds.copy()
    ref = json.loads(out.attrs.get("sva_reference_step", "{}"))
    info = {r: {"name": r, "sources": "sedviz demo", "checkpoints": ckpts.get(r, {}), "sva_reference_step": ref.get(r)}
            for r in out.run.values.tolist()}
    if DEMO_STORE.exists():
        DEMO_STORE.unlink()
    store = NetCDFStore(DEMO_STORE)
    with store.writing():
        store.replace(out, info)
        store.flush()
