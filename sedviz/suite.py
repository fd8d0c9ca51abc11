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
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sedviz import demo

__all__ = ["PAIRS", "GROK_ACC", "MEMO_ACC", "pair_config", "run_names", "split_of", "make_model", "train_pair",
           "build_suite", "suite_signals", "write_suite_data", "load_suite", "score", "tune", "best", "split_runs"]

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
        ("t_add_p31_s2", dict(arch=T, seed=2, every=10, steps=2500)),
        ("t_sub_p31", dict(arch=T, op="sub", frac_train=0.6, steps=2500)),
        ("t_mul_p31", dict(arch=T, op="mul", steps=2500)),
        ("t_add_p23", dict(arch=T, p=23, frac_train=0.6)),
        ("t_add_p41", dict(arch=T, p=41, frac_train=0.4)),
        ("t_add_p47_lr5e3", dict(arch=T, p=47, lr=5e-3, frac_train=0.5, steps=3000, every=40)),
        ("t_add_p31_wd05", dict(arch=T, weight_decay=0.5, steps=3000, every=25)),
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
        ("m_add_p31_lr3e3", M(lr=3e-3, steps=4500, every=30)),
        ("m_add_p31_wd2", M(weight_decay=2.0, steps=3000)),
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

    from sedviz.errors import SedvizError

    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise SedvizError(f"jobs={jobs!r} (--jobs): expected a whole number >= 1")
    if data_out and only:
        raise SedvizError("data_out (--ship): the shipped data must cover every pair; drop only (--only)")
    root = Path(out)
    pairs = list(PAIRS)
    if only:
        want = set(only)
        unknown = want - set(pairs) - {n for p in pairs for n in run_names(p)}
        if unknown:
            raise SedvizError(f"only (--only): unknown names {sorted(unknown)}; pairs are {pairs}")
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
        write_suite_data(ds, data_out)
    return out_d


# ------------------------------------------------------------------------------ shipped data

#: The shipped summary and signal series of the whole suite (written by ``sedviz suite --ship``).
SUITE_DATA = Path(__file__).parent / "data" / "suite.json"
_SERIES = ("weight_norm", "eff_rank", "val_loss", "val_acc", "train_acc", "g23", "log_s2_s3", "usable", "spike")


def _run_of(name: str) -> tuple[str, bool]:
    """(pair, is_control) of a suite run name."""
    for pair in PAIRS:
        wd, ctl = run_names(pair)
        if name in (wd, ctl):
            return pair, name == ctl
    raise KeyError(f"sedviz.suite: {name!r} is not a suite run name")


def suite_signals(ds):
    """:func:`sedviz.analysis.warning.signals` of suite runs: the Gram signals of transformer runs
    read the attention updates, those of MLP runs the MLP updates (they have no attention)."""
    import xarray as xr

    from sedviz.analysis.warning import signals

    parts = []
    for arch, params in (("transformer", "attn"), ("mlp", "mlp")):
        runs = [str(r) for r in ds.run.values if pair_config(_run_of(str(r))[0])["arch"] == arch]
        if runs:
            parts.append(signals(ds.sel(run=runs), params=params))
    sig = xr.concat(parts, dim="run", data_vars="all", coords="minimal", compat="override", join="outer")
    sig.attrs = {}
    return sig


def _num(x: float):
    return None if not np.isfinite(x) else float(f"{x:.6g}")


def summary_row(name: str, steps, val_acc, train_acc) -> dict:
    """Summary of one suite run: its pair, role, split, config, grok and memorization steps."""
    from sedviz.analysis.warning import grok_step

    pair, control = _run_of(name)
    cfg = pair_config(pair, control)
    g = grok_step(steps, val_acc, GROK_ACC)
    m = grok_step(steps, train_acc, MEMO_ACC)
    return {"pair": pair, "role": "control" if control else "grokking", "split": split_of(pair),
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
            "grok_step": _num(g), "memo_step": _num(m), "grokked": bool(np.isfinite(g)),
            "control_grokked": bool(control and np.isfinite(g)),
            "max_val_acc": _num(float(np.nanmax(val_acc))), "final_val_acc": _num(float(val_acc[np.isfinite(val_acc)][-1]))}


def write_suite_data(ds, path=SUITE_DATA) -> Path:
    """Write the per-run summary and the per-checkpoint signal series of the suite Dataset ``ds``
    as JSON (6 significant digits): what the detector tests and docs/suite.md are computed from."""
    import json

    sig = suite_signals(ds)
    runs = {}
    for name in [str(r) for r in sig.run.values]:
        one = sig.sel(run=name)
        keep = np.isfinite(one["val_acc"].values) | np.isfinite(one["weight_norm"].values)
        steps = one.step.values[keep]
        row = summary_row(name, steps, one["val_acc"].values[keep], one["train_acc"].values[keep])
        row["armed_step"] = _num(float(one["armed_step"]))
        row["steps"] = [int(x) for x in steps]
        row["series"] = {k: [_num(float(x)) for x in one[k].values[keep]] for k in _SERIES}
        runs[name] = row
    doc = {"about": "sedviz grokking suite: per-run summary and per-checkpoint detector signals (sedviz suite --ship)",
           "grok_acc": GROK_ACC, "memo_acc": MEMO_ACC,
           "split_rule": "pair index in sedviz.suite.PAIRS even: tuning; odd: heldout",
           "runs": runs}
    path = Path(path)
    path.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    return path


def load_suite(path=SUITE_DATA):
    """The shipped suite: ``(table, sig)``: ``table`` maps run name -> summary row (dict, as in
    :func:`summary_row`), ``sig`` is the (run, step) signals Dataset :func:`sedviz.analysis.warning.detect` takes."""
    import json

    import xarray as xr

    doc = json.loads(Path(path).read_text())
    runs = doc["runs"]
    steps = np.array(sorted({s for r in runs.values() for s in r["steps"]}), dtype=np.int64)
    names = list(runs)
    data = {k: np.full((len(names), len(steps)), np.nan) for k in _SERIES}
    for i, name in enumerate(names):
        pos = np.searchsorted(steps, runs[name]["steps"])
        for k in _SERIES:
            data[k][i, pos] = np.array([np.nan if v is None else v for v in runs[name]["series"][k]], dtype=np.float64)
    sig = xr.Dataset(coords={"run": names, "step": steps})
    for k, v in data.items():
        sig[k] = (("run", "step"), (v > 0.5) if k in ("usable", "spike") else v)
    sig["armed_step"] = ("run", np.array([np.nan if runs[n]["armed_step"] is None else runs[n]["armed_step"]
                                          for n in names], dtype=np.float64))
    table = {n: {k: v for k, v in runs[n].items() if k not in ("steps", "series")} for n in names}
    return table, sig


# ------------------------------------------------------------------------------------ scoring


def score(ew, table: dict, runs=None) -> dict:
    """Per detector, over ``runs`` (default: all in ``table``) of an early_warning/detect result:

    - ``n_grok``: grokking runs (val acc >= 0.9 within the budget, controls included);
    - ``hit_rate``: share of them where the detector fired before the grok step;
    - ``late``, ``missed``: shares that fired after the grok / never;
    - ``n_nogrok``, ``false_alarm_rate``: runs that never grokked, share where it fired;
    - ``control_fire_rate``: share of all control runs where it fired (grokked controls included);
    - ``lead_median``, ``lead_q25``, ``lead_q75``, ``lead_min``, ``lead_max`` (steps) and
      ``lead_frac_median``, ``lead_frac_min``, ``lead_frac_max`` (lead / grok step), over the hits.
    """
    runs = list(table) if runs is None else list(runs)
    out = {}
    for det in [str(d) for d in ew.detector.values]:
        st = {r: str(ew.status.sel(run=r, detector=det).values) for r in runs}
        grok = [r for r in runs if table[r]["grokked"]]
        nog = [r for r in runs if not table[r]["grokked"]]
        ctl = [r for r in runs if table[r]["role"] == "control"]
        hits = [r for r in grok if st[r] == "fired_before_grok"]
        lead = np.array([float(ew.lead.sel(run=r, detector=det)) for r in hits])
        frac = np.array([float(ew.lead_frac.sel(run=r, detector=det)) for r in hits])
        share = lambda xs, n: len(xs) / n if n else float("nan")  # noqa: E731
        q = (lambda a, p: float(np.percentile(a, p)) if a.size else float("nan"))
        out[det] = {
            "n_grok": len(grok), "hit_rate": share(hits, len(grok)),
            "late": share([r for r in grok if st[r] == "fired_after_grok"], len(grok)),
            "missed": share([r for r in grok if st[r] == "not_fired"], len(grok)),
            "n_nogrok": len(nog), "false_alarm_rate": share([r for r in nog if st[r] == "fired_no_grok"], len(nog)),
            "n_control": len(ctl), "control_fire_rate": share([r for r in ctl if st[r].startswith("fired")], len(ctl)),
            "lead_median": q(lead, 50), "lead_q25": q(lead, 25), "lead_q75": q(lead, 75),
            "lead_min": q(lead, 0), "lead_max": q(lead, 100),
            "lead_frac_median": q(frac, 50), "lead_frac_min": q(frac, 0), "lead_frac_max": q(frac, 100),
        }
    return out


def split_runs(table: dict, split: str) -> list[str]:
    """Run names of one half ("tuning" or "heldout")."""
    return [r for r, row in table.items() if row["split"] == split]


#: The grid searched on the tuning half (docs/suite.md): detector -> option -> values; persist for all.
GRID: dict = {
    "wnorm": {"norm_drop": [0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3]},
    "erank": {"erank_drop": [0.01, 0.02, 0.03, 0.05, 0.08, 0.1, 0.15, 0.2]},
    "val_loss": {"val_loss_frac": [0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4]},
    "wnorm_erank": {"norm_drop": [0.02, 0.05, 0.07, 0.1], "erank_drop": [0.02, 0.05, 0.08]},
    "g23": {"g23_drop": [0.3, 0.5, 0.7], "g23_rise": [1.0, 1.25, 1.5]},
    "slope": {"slope_threshold": [0.05, 0.1, 0.2]},
}
PERSIST = [1, 2, 3, 5]


def tune(sig, table: dict, *, max_false_alarm: float = 0.1) -> list[dict]:
    """Every grid point of every detector scored on the tuning half (never the held-out half).

    Returns rows {detector, options, ...score}; the best of a detector is the row with the highest
    hit rate among those with false_alarm_rate <= ``max_false_alarm`` and control_fire_rate <=
    ``max_false_alarm`` (ties: larger median lead fraction, then the first in grid order).
    """
    import itertools

    from sedviz.analysis.warning import detect

    runs = split_runs(table, "tuning")
    part = sig.sel(run=runs)
    rows = []
    for det, grid in GRID.items():
        keys = list(grid)
        for values in itertools.product(*(grid[k] for k in keys), PERSIST):
            opts = dict(zip(keys, values[:-1]), persist=values[-1])
            ew = detect(part, detector=det, **opts)
            rows.append({"detector": det, "options": opts, **score(ew, table, runs)[det]})
    return rows


def best(rows: list[dict], detector: str, max_false_alarm: float = 0.1) -> dict | None:
    """The chosen grid point of ``detector`` among ``rows`` (see :func:`tune`)."""
    ok = [r for r in rows if r["detector"] == detector and not r["false_alarm_rate"] > max_false_alarm
          and not r["control_fire_rate"] > max_false_alarm]
    if not ok:
        return None
    key = lambda r: (r["hit_rate"], np.nan_to_num(r["lead_frac_median"], nan=-1.0))  # noqa: E731
    top = max(key(r) for r in ok)
    return next(r for r in ok if key(r) == top)


def _fmt_row(det: str, sc: dict, opts: str = "") -> str:
    f = lambda x, d=0: "-" if not np.isfinite(x) else f"{x:.{d}f}"  # noqa: E731
    return (f"| {det} | {opts} | {sc['hit_rate'] * sc['n_grok']:.0f}/{sc['n_grok']} ({100 * sc['hit_rate']:.0f}%) | "
            f"{100 * sc['late']:.0f}% | {100 * sc['missed']:.0f}% | "
            f"{sc['false_alarm_rate'] * sc['n_nogrok']:.0f}/{sc['n_nogrok']} ({100 * sc['false_alarm_rate']:.0f}%) | "
            f"{100 * sc['control_fire_rate']:.0f}% | {f(sc['lead_median'])} [{f(sc['lead_q25'])}, {f(sc['lead_q75'])}] | "
            f"{f(sc['lead_min'])}-{f(sc['lead_max'])} | {f(sc['lead_frac_median'], 2)} ({f(sc['lead_frac_min'], 2)}-"
            f"{f(sc['lead_frac_max'], 2)}) |")


HEADER = ("| detector | options | fired before grok | late | missed | false alarms (never grokked) | controls fired | "
          "lead median [IQR] (steps) | lead range | lead / grok step median (range) |\n|---|---|---|---|---|---|---|---|---|---|")


def calibration(path=SUITE_DATA) -> str:
    """The calibration of docs/suite.md from the shipped series, as markdown: the best grid point
    of each detector on the tuning half, the same on the held-out half, and the default detector
    (with the library's default options) on both halves. ``python -m sedviz.suite`` prints it."""
    from sedviz.analysis.warning import DEFAULT_DETECTOR, DETECTORS, detect

    table, sig = load_suite(path)
    rows = tune(sig, table)
    held = split_runs(table, "heldout")
    lines = ["## Best grid point per detector, tuning half", "", HEADER]
    chosen = {}
    for det in GRID:
        b = best(rows, det)
        if b is None:
            lines.append(f"| {det} | no grid point keeps false alarms <= 10% | | | | | | | | |")
            continue
        chosen[det] = b["options"]
        lines.append(_fmt_row(det, b, ", ".join(f"{k}={v}" for k, v in b["options"].items())))
    lines += ["", "## The same options, held-out half", "", HEADER]
    for det, opts in chosen.items():
        ew = detect(sig.sel(run=held), detector=det, **opts)
        lines.append(_fmt_row(det, score(ew, table, held)[det], ", ".join(f"{k}={v}" for k, v in opts.items())))
    lines += ["", f"## Library defaults (early_warning), default detector {DEFAULT_DETECTOR}", "", HEADER]
    for half in ("tuning", "heldout"):
        runs = split_runs(table, half)
        ew = detect(sig.sel(run=runs), detector=list(DETECTORS))
        sc = score(ew, table, runs)
        for det in DETECTORS:
            lines.append(_fmt_row(det, sc[det], half))
    n_ctl_grok = sum(1 for r in table.values() if r["control_grokked"])
    n_wd_fail = sum(1 for r in table.values() if r["role"] == "grokking" and not r["grokked"])
    lines += ["", f"controls that grokked: {n_ctl_grok}; weight-decay runs that did not grok within budget: {n_wd_fail}"]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(calibration())
