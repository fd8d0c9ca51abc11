"""The Dataset describes itself: CF attrs on every variable and coordinate, sv first, <U strings,
the same from memory, a Zarr store, a netCDF store and the shipped demo (docs/schema.md)."""
import numpy as np
import pytest
import xarray as xr

import sedviz
from sedviz.dataset import COORD_ATTRS, VARIABLE_ATTRS, VARIABLE_ORDER, describe
from helpers import write_mlp_run


def _check(ds: xr.Dataset) -> None:
    names = list(ds.data_vars)
    assert names[0] == "sv"
    known = [v for v in names if v in VARIABLE_ORDER]
    assert known == [v for v in VARIABLE_ORDER if v in ds.data_vars]  # the stable order
    assert names == known + sorted(v for v in names if v not in VARIABLE_ORDER)
    for name in ds.variables:
        attrs = ds[name].attrs
        assert attrs.get("long_name") and attrs.get("description"), f"{name} has attrs {attrs}"
        table = COORD_ATTRS if name in ds.coords else VARIABLE_ATTRS
        if name in table:
            assert {k: attrs[k] for k in table[name]} == table[name]
    for name in ("eff_rank", "sva", "align", "val_acc"):
        if name in ds:
            assert ds[name].attrs["units"] == "1"
    assert "units" not in ds["sv"].attrs  # the weights' units are unknown
    for name, coord in ds.coords.items():
        if coord.dtype.kind not in "iuf":
            assert coord.dtype.kind == "U", f"{name}: {coord.dtype}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    write_mlp_run(root / "b_run", n=3)
    write_mlp_run(root / "a_run", n=4, seed=3)
    return root


@pytest.mark.parametrize("store", [None, "s.zarr", "s.nc"])
def test_attrs_order_and_dtypes(runs, tmp_path, store):
    path = None if store is None else tmp_path / store
    ds = sedviz.compute([runs / "b_run", runs / "a_run"], path, k=4, progress=False)
    _check(ds)
    assert ds.run.values.tolist() == ["b_run", "a_run"]  # as given, not sorted
    if path is not None:
        again = sedviz.open(path)
        _check(again)
        xr.testing.assert_identical(again.load(), ds.load())


def test_demo_describes_itself():
    ds = sedviz.load_demo()
    _check(ds)
    assert ds.run.dtype == np.dtype("<U8") and ds.layer.dtype.kind == "U"


def test_describe_normalises_object_strings_and_metric_columns():
    ds = xr.Dataset(
        {"grad_norm": (("run", "step"), np.ones((1, 2))), "eff_rank": (("run", "step"), np.ones((1, 2))),
         "sv": (("run", "step"), np.ones((1, 2)))},
        coords={"run": np.array(["a"], dtype=object), "step": [0, 1]},
    )
    out = describe(ds)
    assert list(out.data_vars) == ["sv", "eff_rank", "grad_norm"]
    assert out.run.dtype == np.dtype("<U1") and out.run.values.tolist() == ["a"]
    assert out.grad_norm.attrs == {"long_name": "grad norm", "description": "from the run's metric log, at the checkpoint steps"}
    np.testing.assert_array_equal(out.sv.values, ds.sv.values)


def test_every_record_variable_has_attrs():
    from sedviz.dataset import RECORD_DIMS

    assert set(RECORD_DIMS) <= set(VARIABLE_ATTRS) and set(RECORD_DIMS) <= set(VARIABLE_ORDER)
    assert VARIABLE_ATTRS["grad_eff_rank"]["units"] == "1" and "gradient" in VARIABLE_ATTRS["grad_sv"]["long_name"]
