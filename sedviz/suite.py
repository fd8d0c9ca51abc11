"""The grokking suite: grokking/control pairs trained by sedviz on CPU, to calibrate detectors.

Each pair is two runs that share every hyperparameter except the weight decay: the grokking run
(``<pair>_wd``, weight decay > 0) and its control (``<pair>_ctl``, weight decay 0). The pairs
vary the seed, the modulus p, the operation ((a + b), (a - b) or (a * b) mod p), the learning
rate, the weight decay, the training fraction, the width, the depth (1 or 2 layers), the
architecture (the demo's transformer, :mod:`sedviz.demo`, or an MLP on the one-hot pair (a, b))
and the checkpoint cadence. Training is :func:`sedviz.demo.fit_folder` (full-batch AdamW with a
short warmup, the demo's loop), one torch thread.

Definitions used by the suite (docs/suite.md):

- grok step: the first checkpoint with validation accuracy >= 0.9 (``GROK_ACC``);
- a *grokking run* is a run that reaches it within its ``steps`` (a control that does so is a
  grokking run too, and :func:`summary_table` reports it as ``control_grokked``);
- memorization step: the first checkpoint with training accuracy >= 0.99.

Split rule, fixed before any detector was tuned: a pair belongs to the *tuning* half when its
index in ``PAIRS`` is even, to the *held-out* half when it is odd (:func:`split_of`).

``sedviz suite`` trains the runs (checkpoints outside the package, default ``runs/suite``),
computes them into a store through :func:`sedviz.compute`, and writes the per-run summary and
the per-checkpoint signal series the detectors need (:func:`series_table`), which is what
``sedviz/data/suite.json`` ships.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sedviz import demo

__all__ = ["PAIRS", "GROK_ACC", "MEMO_ACC", "pair_config", "run_names", "split_of", "make_model", "train_pair",
           "build_suite"]

GROK_ACC = 0.9
MEMO_ACC = 0.99

#: Settings shared by every suite run unless a pair overrides them.
BASE: dict = {
    "arch": "transformer",  # "transformer" (the demo's, 1 or 2 blocks) or "mlp" (one-hot a, b -> p)
    "op": "add",  # "add", "sub", "mul": the label is (a + b), (a - b) or (a * b) mod p
    "p": 31,
    "frac_train": 0.5,
    "split_seed": 598,
    "seed": 0,
    "n_layers": 1,
    "d_model": 32,  # transformer width; the MLP's hidden width is "width"
    "n_heads": 4,
    "d_mlp": 128,
    "width": 128,
    "act": "relu",
    "init_scale": 1.0,
    "lr": 1e-2,
    "betas": (0.9, 0.98),
    "eps": 1e-8,
    "warmup_steps": 10,
    "weight_decay": 1.0,  # of the grokking run; the control has 0
    "steps": 1500,
    "every": 20,
    "threads": 1,
    "flush_denormal": True,
}

#: The pairs, in a fixed order (the split rule reads the index): name -> overrides of BASE.
PAIRS: dict = {}


def _pairs() -> dict:
    T = "transformer"

    def M(**kw):  # the MLP pairs: 60% training pairs, 2000 steps unless overridden
        return dict(dict(arch="mlp", frac_train=0.6, steps=2000), **kw)

    rows = [
        # name,          overrides
        ("t_add_p31_s0", dict(arch=T)),
        ("t_add_p31_s1", dict(arch=T, seed=1)),
        ("t_add_p31_s2", dict(arch=T, seed=2, every=10)),
        ("t_sub_p31", dict(arch=T, op="sub")),
        ("t_mul_p31", dict(arch=T, op="mul")),
        ("t_add_p23", dict(arch=T, p=23, frac_train=0.6)),
        ("t_add_p41", dict(arch=T, p=41, frac_train=0.4)),
        ("t_add_p47_lr5e3", dict(arch=T, p=47, lr=5e-3, frac_train=0.4, steps=2000, every=25)),
        ("t_add_p31_wd05", dict(arch=T, weight_decay=0.5, steps=2000, every=25)),
        ("t_add_p31_d64", dict(arch=T, d_model=64, d_mlp=256)),
        ("t_add_p31_l2", dict(arch=T, n_layers=2)),
        ("t_sub_p37_l2", dict(arch=T, op="sub", p=37, n_layers=2, seed=3)),
        ("m_add_p31_s0", M()),
        ("m_add_p31_s1", M(seed=1)),
        ("m_add_p31_s2", M(seed=2, every=10)),
        ("m_sub_p31", M(op="sub")),
        ("m_mul_p31", M(op="mul")),
        ("m_add_p23", M(p=23, frac_train=0.7)),
        ("m_add_p43", M(p=43)),
        ("m_add_p59", M(p=59, frac_train=0.5, steps=2500, every=25)),
        ("m_add_p31_lr3e3", M(lr=3e-3, steps=3000, every=25)),
        ("m_add_p31_wd2", M(weight_decay=2.0)),
        ("m_add_p31_w256", M(width=256)),
        ("m_add_p31_l2", M(n_layers=2)),
        ("m_mul_p37_l2", M(op="mul", p=37, n_layers=2, seed=4)),
        ("t_mul_p37_s5", dict(arch=T, op="mul", p=37, seed=5, frac_train=0.45)),
    ]
    return dict(rows)


PAIRS.update(_pairs())


def pair_config(pair: str, control: bool = False) -> dict:
    """The full configuration of one run of ``pair`` (the control has weight decay 0)."""
    if pair not in PAIRS:
        raise KeyError(f"sedviz.suite: unknown pair {pair!r}; pairs are {list(PAIRS)}")
    cfg = dict(BASE)
    cfg.update(PAIRS[pair])
    if control:
        cfg["weight_decay"] = 0.0
    cfg["betas"] = tuple(float(b) for b in cfg["betas"])
    cfg["pair"] = pair
    cfg["task"] = {"add": "(a + b) mod p", "sub": "(a - b) mod p", "mul": "(a * b) mod p"}[cfg["op"]]
    return cfg


def run_names(pair: str) -> tuple[str, str]:
    """(grokking run, control run) names of a pair."""
    return f"{pair}_wd", f"{pair}_ctl"


def split_of(pair: str) -> str:
    """"tuning" for pairs at an even index of PAIRS, "heldout" for odd ones (fixed before tuning)."""
    return "tuning" if list(PAIRS).index(pair) % 2 == 0 else "heldout"


# ----------------------------------------------------------------------------------------- models


def _causal_attention(attn: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """Causal self-attention of the demo's attention module over every position: (B, T, d) -> (B, T, d)."""
    b, t, d = h.shape
    q, k, v = attn.qkv(h).split(d, dim=-1)
    q, k, v = (x.reshape(b, t, attn.n_heads, attn.d_head).transpose(1, 2) for x in (q, k, v))
    z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return attn.out_proj(z.transpose(1, 2).reshape(b, t, d))


class DeepTransformer(demo.DemoTransformer):
    """The demo transformer with ``n_layers`` blocks: the same parameters and names per block.

    Every block but the last attends causally over all three positions; the last one reads only
    the "=" position, as in the one-block demo model.
    """

    def __init__(self, p, d_model, n_heads, d_mlp, act="relu", n_layers=2):
        super().__init__(p, d_model, n_heads, d_mlp, act)
        self.blocks = nn.ModuleList([demo._Block(d_model, n_heads, d_mlp, act) for _ in range(n_layers)])

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        h = self.tok_embed(tokens) + self.pos_embed.weight[:t]
        for block in self.blocks[:-1]:
            h = h + _causal_attention(block.attn, h)
            h = h + block.mlp(h)
        last = self.blocks[-1]
        x = h[:, -1] + last.attn(last.attn.qkv(h))
        x = x + last.mlp(x)
        return self.unembed(x)


class OneHotMLP(nn.Module):
    """An MLP on the concatenated one-hot codes of a and b: ``[onehot(a); onehot(b)] -> width -> p``.

    ``mlp.fc_in.weight`` is (width, 2p) (columns 0..p-1 read a, p..2p-1 read b), optional hidden
    layers ``mlp.hidden.{i}.weight`` (width, width), and ``mlp.fc_out.weight`` (p, width); no biases.
    Takes the same ``[a, b, p]`` token rows as the transformer (the "=" token is ignored).
    """

    def __init__(self, p: int, width: int, n_layers: int = 1, act: str = "relu"):
        super().__init__()
        self.p = p
        self.act = demo._ACTS[act]
        self.mlp = nn.Module()
        self.mlp.fc_in = nn.Linear(2 * p, width, bias=False)
        self.mlp.hidden = nn.ModuleList([nn.Linear(width, width, bias=False) for _ in range(n_layers - 1)])
        self.mlp.fc_out = nn.Linear(width, p, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        w = self.mlp.fc_in.weight  # one-hot input: the product is a sum of two columns
        h = self.act(w[:, tokens[:, 0]].T + w[:, self.p + tokens[:, 1]].T)
        for layer in self.mlp.hidden:
            h = self.act(layer(h))
        return self.mlp.fc_out(h)


def make_model(cfg: dict) -> nn.Module:
    """The untrained model of a suite config, every weight ~ N(0, (init_scale / sqrt(fan_in))^2)."""
    if cfg["arch"] == "transformer" and int(cfg["n_layers"]) == 1:
        return demo.make_model({k: cfg[k] for k in demo.CONFIG if k in cfg})
    with torch.random.fork_rng(devices=[]):
        if cfg["arch"] == "transformer":
            model = DeepTransformer(cfg["p"], cfg["d_model"], cfg["n_heads"], cfg["d_mlp"], cfg["act"], cfg["n_layers"])
        elif cfg["arch"] == "mlp":
            model = OneHotMLP(cfg["p"], cfg["width"], cfg["n_layers"], cfg["act"])
        else:
            raise ValueError(f"sedviz.suite: arch={cfg['arch']!r} is not 'transformer' or 'mlp'")
    gen = torch.Generator().manual_seed(int(cfg["seed"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "embed" in name and "unembed" not in name:
                fan_in = cfg["d_model"]
            elif name == "mlp.fc_in.weight":
                fan_in = 2  # one-hot input: two active entries
            else:
                fan_in = param.shape[1]
            param.copy_(torch.randn(param.shape, generator=gen) * (cfg["init_scale"] / math.sqrt(fan_in)))
    return model


def dataset(split: str, cfg: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``[a, b, p]`` and labels of one split (the demo's split of the p*p pairs, the pair's operation)."""
    inputs, _ = demo.dataset(split, {k: cfg[k] for k in ("p", "frac_train", "split_seed")})
    a, b, p = inputs[:, 0], inputs[:, 1], int(cfg["p"])
    labels = {"add": (a + b) % p, "sub": (a - b) % p, "mul": (a * b) % p}[cfg["op"]]
    return inputs, labels


def _build(cfg: dict):
    return make_model(cfg), dataset("train", cfg), dataset("val", cfg)


def train_pair(pair: str, root, *, progress: bool = False) -> list[Path]:
    """Train both runs of ``pair`` into ``root/<run>``; returns [grokking run folder, control folder]."""
    out = []
    for name, control in zip(run_names(pair), (False, True)):
        cfg = pair_config(pair, control)
        out.append(demo.fit_folder(Path(root) / name, cfg, _build, progress=progress, who=f"sedviz.suite {name}"))
    return out


def _train_one(args) -> tuple[str, float]:
    name, pair, control, root = args
    t0 = time.process_time()
    cfg = pair_config(pair, control)
    demo.fit_folder(Path(root) / name, cfg, _build, progress=False, who=f"sedviz.suite {name}")
    return name, time.process_time() - t0


def _done(folder: Path, cfg: dict) -> bool:
    """A run folder already trained with this config (metrics.csv and the last checkpoint present)."""
    import json

    try:
        saved = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    same = all(saved.get(k) == (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items())
    return same and (folder / "metrics.csv").is_file() and (folder / f"step_{int(cfg['steps']):06d}.pt").is_file()


def build_suite(out="runs/suite", *, only=None, jobs: int = 1, store=None, progress: bool = True,
                data_out=None) -> dict:
    """Train the suite's runs (skipping folders already trained with the same config), compute
    them into ``store`` (default ``out/suite.zarr``) and return ``{"store", "runs", "cpu_s", "table"}``.

    ``only``: pair names (or run names) to build; ``jobs``: training processes (1 or more).
    ``data_out``: also write the summary and signal series there as JSON (sedviz/data/suite.json).
    """
    from sedviz.pipeline import compute

    root = Path(out)
    pairs = list(PAIRS)
    if only:
        want = set(only)
        unknown = want - set(pairs) - {n for p in pairs for n in run_names(p)}
        if unknown:
            from sedviz.errors import SedvizError

            raise SedvizError(f"sedviz suite --only: unknown names {sorted(unknown)}; pairs are {pairs}")
        pairs = [p for p in pairs if p in want or any(n in want for n in run_names(p))]
    todo, folders = [], []
    for pair in pairs:
        for name, control in zip(run_names(pair), (False, True)):
            folders.append(root / name)
            if not _done(root / name, pair_config(pair, control)):
                todo.append((name, pair, control, str(root)))
    cpu = {}
    if jobs > 1 and len(todo) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(jobs) as pool:
            for name, sec in pool.imap_unordered(_train_one, todo):
                cpu[name] = sec
                if progress:
                    print(f"trained {name} in {sec:.1f} s CPU", flush=True)
    else:
        for item in todo:
            name, sec = _train_one(item)
            cpu[name] = sec
            if progress:
                print(f"trained {name} in {sec:.1f} s CPU", flush=True)
    store = Path(store) if store else root / "suite.zarr"
    t0 = time.process_time()
    ds = compute([str(f) for f in folders], store, windows=(10,), max_lag=9, sketch=False, sva=False,
                 align=False, progress=progress)
    cpu["compute"] = time.process_time() - t0
    out_d = {"store": store, "runs": folders, "cpu_s": cpu, "dataset": ds}
    if data_out:
        from sedviz.analysis.warning import write_suite_data

        write_suite_data(ds, data_out)
    return out_d


if __name__ == "__main__":  # pragma: no cover - developer helper
    os.environ.setdefault("OMP_NUM_THREADS", "1")
