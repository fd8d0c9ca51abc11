"""Bad weights and bad options: clear messages, warnings and skips, nothing stored is lost."""
import warnings

import numpy as np
import pytest
import torch

import sedviz
from sedviz.errors import CheckpointError, SedvizError
from helpers import write_mlp_run


def test_nan_weights_raise_naming_file_and_layer(tmp_path):
    states = write_mlp_run(tmp_path / "a", n=4)
    bad = dict(states[2])
    bad["2.weight"] = bad["2.weight"].clone()
    bad["2.weight"][0, 0] = float("nan")
    torch.save(bad, tmp_path / "a" / "step_000030.pt")
    with pytest.raises(CheckpointError, match=r"step_000030\.pt.*'2\.weight'.*NaN.*on_error='skip'"):
        sedviz.compute(tmp_path / "a", progress=False)
    with pytest.warns(UserWarning, match=r"step_000030\.pt: layer '2\.weight' holds NaN/Inf"):
        ds = sedviz.compute(tmp_path / "a", progress=False, on_error="skip")
    assert np.isnan(ds.sv.sel(run="a", step=30, layer="2.weight")).all()
    assert not np.isnan(ds.sv.sel(run="a", step=30, layer="0.weight", rank=slice(0, 11))).any()  # the rest is kept


def test_shape_change_mid_run(tmp_path):
    states = write_mlp_run(tmp_path / "a", n=4)
    bad = dict(states[1])
    bad["2.weight"] = torch.randn(16, 32)
    torch.save(bad, tmp_path / "a" / "step_000020.pt")
    with pytest.raises(CheckpointError, match=r"step_000020\.pt.*'2\.weight' has shape \(16, 32\).*split the run"):
        sedviz.compute(tmp_path / "a", progress=False)
    with pytest.warns(UserWarning, match="skipped"):
        ds = sedviz.compute(tmp_path / "a", progress=False, on_error="skip")
    assert 20 not in ds.step.values and ds.sizes["step"] == 3


def test_bad_new_checkpoint_keeps_stored_results(tmp_path):
    write_mlp_run(tmp_path / "a", n=4)
    store = tmp_path / "s.zarr"
    before = sedviz.compute(tmp_path / "a", store, progress=False, sva=False)
    (tmp_path / "a" / "step_000050.pt").write_bytes(b"")  # a zero-byte file appears
    with pytest.raises(CheckpointError, match="step_000050"):
        sedviz.compute(tmp_path / "a", store, progress=False, sva=False)
    after = sedviz.open(store)
    np.testing.assert_array_equal(after.sv.values, before.sv.values)


def test_skip_leaves_unreadable_checkpoint_out(tmp_path):
    write_mlp_run(tmp_path / "a", n=4)
    (tmp_path / "a" / "step_000025.pt").write_bytes(b"PK\x03\x04 truncated")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = sedviz.compute(tmp_path / "a", progress=False, on_error="skip")
    assert ds.step.values.tolist() == [10, 20, 30, 40]
    assert any("step_000025.pt" in str(w.message) for w in caught)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 0}, "k=0"),
        ({"windows": [1]}, "windows="),
        ({"dtype": "float16"}, "dtype='float16'"),
        ({"on_error": "ignore"}, "on_error='ignore'"),
        ({"max_lag": "some"}, "max_lag='some'"),
        ({"kinds": {"nope.weight": "conv"}}, "nope.weight"),
        ({"kinds": {"0.weight": "convolution"}}, "convolution"),
    ],
)
def test_bad_options_name_the_parameter(tmp_path, kwargs, match):
    write_mlp_run(tmp_path / "a", n=2)
    with pytest.raises(SedvizError, match=match):
        sedviz.compute(tmp_path / "a", progress=False, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without a GPU")
def test_cuda_without_gpu_is_clear(tmp_path):
    write_mlp_run(tmp_path / "a", n=2)
    with pytest.raises(SedvizError, match="no GPU"):
        sedviz.compute(tmp_path / "a", progress=False, device="cuda")


def test_malicious_pickle_in_run_is_refused_not_run(tmp_path):
    import pickle

    write_mlp_run(tmp_path / "a", n=2)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"state_dict": Evil(), "step": 99}, tmp_path / "a" / "step_000099.pt", pickle_module=pickle)
    with pytest.raises(CheckpointError, match="step_000099"):
        sedviz.compute(tmp_path / "a", progress=False)
    assert not marker.exists()
