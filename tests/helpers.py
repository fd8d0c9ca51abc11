"""Small real runs of checkpoints for the tests (no demo training needed)."""
from pathlib import Path

import numpy as np
import torch
from torch import nn


def write_mlp_run(folder: Path, *, n: int = 8, width: int = 32, seed: int = 0, every: int = 10, start: int = 0) -> list[dict]:
    """A small MLP trained a few SGD steps between saves; returns the saved state dicts."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(12, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(128, 12, generator=g)
    y = torch.randint(0, 3, (128,), generator=g)
    states = []
    for i in range(start + n):
        for _ in range(every):
            loss = nn.functional.cross_entropy(model(X), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if i >= start:
            sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
            torch.save(sd, folder / f"step_{(i + 1) * every:06d}.pt")
            states.append(sd)
    with open(folder / "metrics.csv", "w") as f:
        f.write("step,train_loss,val_acc\n")
        for i in range(start + n):
            f.write(f"{(i + 1) * every},{1.0 / (i + 1)},{min(1.0, 0.1 * i)}\n")
    return states


def assert_same(a, b, *, rtol=0.0):
    """Two Datasets hold the same numbers (NaN in the same places)."""
    assert sorted(a.data_vars) == sorted(b.data_vars)
    for v in a.data_vars:
        x, y = a[v].transpose(*b[v].dims), b[v]
        assert x.shape == y.shape, v
        np.testing.assert_allclose(x.values, y.values, rtol=rtol, atol=0 if rtol == 0 else 1e-12, equal_nan=True, err_msg=v)
