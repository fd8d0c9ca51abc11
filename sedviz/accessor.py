"""``ds.sed``: the analyses as methods of a sedviz Dataset (xarray's accessor convention).

    ds = sedviz.load_demo()
    ds.sed.edge(windows=[10, 20])          # same as sedviz.analysis.edge(ds, windows=[10, 20])
    ds.sed.layers(kind="attn")             # layer names of a kind ("attn" matches every attn_*)
"""
from __future__ import annotations

import xarray as xr

from .errors import SedvizError


@xr.register_dataset_accessor("sed")
class SedAccessor:
    def __init__(self, ds: xr.Dataset):
        self._ds = ds

    def layers(self, kind: str | list[str] | None = None) -> list[str]:
        """Layer names, optionally of some kinds; a prefix like ``"attn"`` matches ``attn_qkv``, ``attn_out``..."""
        ds = self._ds
        if "layer" not in ds.dims:
            raise SedvizError("this Dataset has no 'layer' dimension; is it a sedviz Dataset?")
        names = ds.layer.values.tolist()
        if kind is None:
            return names
        kinds = [kind] if isinstance(kind, str) else list(kind)
        return [n for n, k in zip(names, ds.layer_kind.values.tolist()) if any(str(k).startswith(x) for x in kinds)]

    def edge(self, windows=(10, 20), **kwargs):
        from .analysis import edge

        return edge(self._ds, windows, **kwargs)

    def lag_flip(self, windows=(10, 20), **kwargs):
        from .analysis import lag_flip

        return lag_flip(self._ds, windows, **kwargs)

    def early_warning(self, **kwargs):
        from .analysis import early_warning

        return early_warning(self._ds, **kwargs)

    def drift(self, **kwargs):
        from .analysis import drift

        return drift(self._ds, **kwargs)

    def prune_curves(self, model_factory, evaluate, **kwargs):
        from .analysis import prune_curves

        return prune_curves(self._ds, model_factory, evaluate, **kwargs)

    def masks(self, model_factory, evaluate, **kwargs):
        from .analysis import masks

        return masks(self._ds, model_factory, evaluate, **kwargs)
