"""Following a store while a recorder writes it: a refresh shows the new records."""
import pytest
import torch

pytest.importorskip("ipywidgets")

import sedviz
from sedviz.follow import Follow, changed, committed
from sedviz.recorder import Recorder


def test_follow_sees_new_records(tmp_path):
    from sedviz.widgets import eff_rank_explorer

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    store = tmp_path / "live.zarr"
    rec = Recorder(store, every=1, sketch=False, max_lag=None, sva=False, commit_every=1)
    for step in (1, 2):
        rec.record(model, step)
        with torch.no_grad():
            model[0].weight.mul_(1.5)
    view = Follow(store, eff_rank_explorer)
    assert view.ds.step.values.tolist() == [1, 2]
    assert view.refresh() is False  # nothing new
    rec.record(model, 3)
    assert changed(store, view._seen) and committed(store) == {"run": 3}
    assert view.refresh() is True
    assert view.ds.step.values.tolist() == [1, 2, 3]
    assert view.widget.children[1] is view.explorer
    # the new explorer draws the new step: the third eff_rank of layer 0.weight as computed
    s = torch.linalg.svdvals(model[0].weight.detach().double())
    p = s / s.sum()
    expected = float(torch.exp(-(p * p.log()).sum()) / len(s))
    assert float(view.ds.eff_rank.sel(run="run", layer="0.weight", step=3)) == pytest.approx(expected, rel=1e-6)
    rec.close()
    with pytest.raises(sedviz.StoreError, match="auto_refresh"):
        Follow(store, eff_rank_explorer, auto_refresh=0)
