"""The demo run: modular addition that groks, trained by sedviz itself on CPU.

Every quick start, notebook default, test fixture and the Binder demo read the two runs this module
trains. The task is the grokking setup of Power et al. (2022) in the one-layer form of Nanda et al.
(2023, "Progress measures for grokking via mechanistic interpretability"): predict (a + b) mod p
from the tokens ``a b =``, a one-layer transformer without LayerNorm, AdamW with weight decay 1.0,
full-batch training on a fixed 30% of all p*p pairs, validation on the remaining 70%.

Two runs share everything but the weight decay:

- ``grok_wd1`` (weight decay 1.0) memorizes the training pairs early, then much later generalizes:
  validation accuracy jumps from chance to ~1 (the grok step, docs/methods.md#early-warning).
- ``grok_wd0`` (weight decay 0.0) memorizes too and never generalizes within the same steps; it is
  the control on which an early-warning detector must stay silent.

Layout of a run folder (read by :mod:`sedviz.io`)::

    step_000000.pt ... step_NNNNNN.pt   plain state_dicts (torch.save), step = optimizer steps taken
    metrics.csv                         step,train_loss,train_acc,val_loss,val_acc (one row per checkpoint)
    config.json                         CONFIG plus weight_decay and sedviz_version

Parameter names (and the layer kinds :func:`sedviz.layers.layer_kind` gives them)::

    tok_embed.weight              (p + 1, d)    embed     tokens 0..p-1 are numbers, token p is "="
    pos_embed.weight              (3, d)        embed
    blocks.0.attn.qkv.weight      (3d, d)       attn_qkv  rows [Q; K; V], head h = rows h*d_head..(h+1)*d_head of each
    blocks.0.attn.out_proj.weight (d, d)        attn_out
    blocks.0.mlp.fc_in.weight     (d_mlp, d)    mlp_in
    blocks.0.mlp.fc_out.weight    (d, d_mlp)    mlp_out
    unembed.weight                (p, d)        unembed   a Linear(d, p)

With the default CONFIG (the shipped data, trained on a 2-core CPU, one thread): ``grok_wd1`` reaches train accuracy
0.99 at step 100 and validation accuracy 0.9 at step 2500 (100 checkpoints before it); ``grok_wd0``
stays below 0.03 validation accuracy for all 3500 steps. Each run has 141 checkpoints (34 MiB) and
takes about 65 s of CPU time. Over seeds 0-4 (docs/demo.md) grok_wd1 grokked at steps 1000-2900
or, on seed 4, was still climbing (val acc 0.56) at step 3500.

``sedviz.demo:make_model`` and ``sedviz.demo:evaluate`` work with no arguments, so they serve as the
model factory and the evaluation of the pruning and connectivity analyses (docs/methods.md#pruning, 6).
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sedviz._version import __version__

__all__ = ["CONFIG", "RUNS", "make_model", "dataset", "evaluate", "train_run", "train_demo", "fit_folder",
           "record_demo"]

#: Every hyperparameter of the demo. Both runs use all of it; only ``weight_decay`` differs (RUNS).
CONFIG: dict = {
    "task": "(a + b) mod p",
    "p": 97,  # modulus; vocabulary is p numbers plus "="
    "frac_train": 0.3,  # fraction of all p*p pairs used for training, the rest is validation
    "split_seed": 598,  # seed of the train/validation split (shared by both runs)
    "seed": 0,  # seed of the initialization
    "d_model": 64,
    "n_heads": 4,
    "d_mlp": 256,
    "act": "relu",  # MLP nonlinearity: "relu" (Nanda et al.) or "gelu"
    "init_scale": 1.0,  # every weight ~ N(0, (init_scale / sqrt(fan_in))^2), embeddings use fan_in = d_model
    "lr": 5e-3,  # 5x Nanda et al.'s 1e-3: grokking in ~2.5k instead of ~10k+ steps, so the demo fits a CPU
    "betas": (0.9, 0.98),
    "eps": 1e-8,
    "warmup_steps": 10,  # linear learning-rate warmup, then constant
    "steps": 3500,  # optimizer steps per run (full batch: one step = one epoch)
    "every": 25,  # checkpoint and metrics every `every` steps, plus step 0 and the last step
    # At most this many torch threads while training (restored afterwards). One: the matrices are
    # small, and on a shared 2-core machine two threads ran 4-10x slower than one whenever other
    # processes were busy (measured: 23-33 vs 125-257 ms/step), while gaining 1.7x on an idle one.
    "threads": 1,
    "flush_denormal": True,  # flush float32 denormals to zero while training (see train_run)
}

#: The two demo runs: folder name -> what differs from CONFIG.
RUNS: dict = {"grok_wd1": {"weight_decay": 1.0}, "grok_wd0": {"weight_decay": 0.0}}


def _cfg(config: dict | None) -> dict:
    """CONFIG updated with the given entries (unknown keys are an error, to catch typos)."""
    out = dict(CONFIG)
    if config:
        unknown = sorted(set(config) - set(CONFIG) - {"weight_decay"})
        if unknown:
            raise ValueError(f"sedviz.demo: unknown config keys {unknown}; known keys are {sorted(CONFIG)}")
        out.update(config)
    out["betas"] = tuple(float(b) for b in out["betas"])
    if out["act"] not in _ACTS:
        raise ValueError(f"sedviz.demo: act={out['act']!r} is not one of {sorted(_ACTS)}")
    if out["d_model"] % out["n_heads"]:
        raise ValueError(f"sedviz.demo: d_model={out['d_model']} must be divisible by n_heads={out['n_heads']}")
    return out


# ----------------------------------------------------------------------------------------- model


class _Attention(nn.Module):
    """Multi-head self-attention with a fused Q, K, V projection and no biases.

    Only the last position ("=") is read by the classifier, so only its query is formed; with
    causal masking that position attends to all three tokens, so this equals a causal transformer.
    ``forward`` takes the stream already projected by ``qkv`` (DemoTransformer.forward does that).
    """

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:  # (B, T, 3d) -> (B, d) at the last position
        b, t, d3 = qkv.shape
        d = d3 // 3
        q, k, v = qkv.split(d, dim=-1)  # rows [Q; K; V] of the weight
        q = q[:, -1:].reshape(b, 1, self.n_heads, self.d_head)  # (B, 1, H, dh), head h = features h*dh..
        k = k.reshape(b, t, self.n_heads, self.d_head)  # (B, T, H, dh)
        v = v.reshape(b, t, self.n_heads, self.d_head)
        # Products and sums rather than batched matmuls: with one query the matrices are tiny.
        att = torch.softmax((q * k).sum(-1) / math.sqrt(self.d_head), dim=1)  # (B, T, H), over keys
        z = (att.unsqueeze(-1) * v).sum(1).reshape(b, d)  # (B, d), heads concatenated in order
        return self.out_proj(z)


_ACTS = {"relu": F.relu, "gelu": F.gelu}


class _MLP(nn.Module):
    def __init__(self, d_model: int, d_mlp: int, act: str = "relu"):
        super().__init__()
        self.act = _ACTS[act]
        self.fc_in = nn.Linear(d_model, d_mlp, bias=False)
        self.fc_out = nn.Linear(d_mlp, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.act(self.fc_in(x)))


class _Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_mlp: int, act: str = "relu"):
        super().__init__()
        self.attn = _Attention(d_model, n_heads)
        self.mlp = _MLP(d_model, d_mlp, act)


class DemoTransformer(nn.Module):
    """One-layer, LayerNorm-free transformer on ``a b =`` returning logits over 0..p-1 (Nanda et al. 2023)."""

    def __init__(self, p: int, d_model: int, n_heads: int, d_mlp: int, act: str = "relu"):
        super().__init__()
        self.p = p
        self.tok_embed = nn.Embedding(p + 1, d_model)
        self.pos_embed = nn.Embedding(3, d_model)
        self.blocks = nn.ModuleList([_Block(d_model, n_heads, d_mlp, act)])
        self.unembed = nn.Linear(d_model, p, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, T) int64 -> (B, p)
        t = tokens.shape[1]
        block = self.blocks[0]
        # The input stream at position i is tok_embed[token] + pos_embed[i]; its Q, K, V projection
        # depends on (i, token) only, so it is computed once per vocabulary entry and gathered:
        # the same function as projecting every position of every example, at a fraction of the cost.
        stream = self.tok_embed.weight.unsqueeze(0) + self.pos_embed.weight[:t].unsqueeze(1)  # (T, V, d)
        table = block.attn.qkv(stream).flatten(0, 1)  # (T * V, 3d), row i * V + token
        offsets = torch.arange(t, device=tokens.device) * self.tok_embed.num_embeddings
        qkv = F.embedding(tokens + offsets, table)  # (B, T, 3d); F.embedding's backward is fast on CPU
        h = self.tok_embed(tokens[:, -1]) + self.pos_embed.weight[t - 1]  # residual stream at "="
        h = h + block.attn(qkv)
        h = h + block.mlp(h)
        return self.unembed(h)


def make_model(config: dict | None = None) -> torch.nn.Module:
    """The demo transformer, untrained, initialized deterministically from ``config["seed"]``.

    Every weight is drawn from N(0, (init_scale / sqrt(fan_in))^2), fan_in = d_model for the
    embeddings; the global torch RNG is neither used nor advanced.
    """
    cfg = _cfg(config)
    with torch.random.fork_rng(devices=[]):  # torch's default init draws from the global RNG
        model = DemoTransformer(cfg["p"], cfg["d_model"], cfg["n_heads"], cfg["d_mlp"], cfg["act"])
    gen = torch.Generator().manual_seed(int(cfg["seed"]))
    with torch.no_grad():
        for name, param in model.named_parameters():  # fixed order: the state-dict order
            fan_in = cfg["d_model"] if "embed" in name and "unembed" not in name else param.shape[1]
            param.copy_(torch.randn(param.shape, generator=gen) * (cfg["init_scale"] / math.sqrt(fan_in)))
    return model


# ------------------------------------------------------------------------------------------ data

_SPLITS: dict = {}


def _split_index(p: int, frac_train: float, split_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    key = (p, float(frac_train), int(split_seed))
    if key not in _SPLITS:
        perm = torch.randperm(p * p, generator=torch.Generator().manual_seed(int(split_seed)))
        n_train = int(round(frac_train * p * p))
        _SPLITS[key] = (perm[:n_train].sort().values, perm[n_train:].sort().values)
    return _SPLITS[key]


def dataset(split: str, config: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (N, 3) int64 rows ``[a, b, p]`` and labels (N,) ``(a + b) % p`` of one split.

    The pair (a, b) has index a * p + b; a permutation seeded by ``split_seed`` puts the first
    round(frac_train * p^2) indices in "train", the rest in "val". Rows are in index order.
    """
    if split not in ("train", "val"):
        raise ValueError(f"sedviz.demo.dataset: split must be 'train' or 'val', got {split!r}")
    cfg = _cfg(config)
    p = int(cfg["p"])
    idx = _split_index(p, cfg["frac_train"], cfg["split_seed"])[0 if split == "train" else 1]
    a, b = idx // p, idx % p
    inputs = torch.stack([a, b, torch.full_like(a, p)], dim=1)
    return inputs, (a + b) % p


def _loss_acc(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    return float(F.cross_entropy(logits, labels)), float((logits.argmax(-1) == labels).float().mean())


def evaluate(model: torch.nn.Module, split: str = "val", config: dict | None = None) -> dict:
    """Mean cross-entropy (nats) and accuracy of ``model`` on one split: ``{"loss", "acc"}``.

    Runs under ``torch.no_grad()`` in ``model.eval()`` on the model's device; the model's training
    mode is restored. ``config`` must be the one the model was trained with (default: CONFIG).
    """
    cfg = _cfg(config)
    if getattr(model, "p", cfg["p"]) != cfg["p"]:
        raise ValueError(
            f"sedviz.demo.evaluate: the model predicts mod p={model.p} but the config has p={cfg['p']}; "
            "pass the config the model was trained with"
        )
    inputs, labels = dataset(split, cfg)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            loss, acc = _loss_acc(model(inputs.to(device)), labels.to(device))
    finally:
        model.train(was_training)
    return {"loss": loss, "acc": acc}


# -------------------------------------------------------------------------------------- training

_METRICS = ("step", "train_loss", "train_acc", "val_loss", "val_acc")


def _save_state(model: nn.Module, path: Path) -> None:
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, path)


def train_run(out_dir, *, weight_decay: float, config: dict | None = None, progress: bool = True) -> Path:
    """Train one demo run into the folder ``out_dir`` and return it.

    Full-batch AdamW on the train split for ``steps`` steps. Checkpoints (``step_{step:06d}.pt``)
    and a metrics row are written at step 0, every ``every`` steps and at the last step; a step is
    the number of optimizer updates taken. Train metrics of a checkpoint are those of the forward
    pass the next update starts from (the same parameters, no dropout), so they cost nothing extra.
    A run folder written before (``step_*.pt``, metrics.csv, config.json) is replaced, so that no
    stale checkpoint of another configuration is left beside the new ones.

    Training uses at most ``threads`` torch threads and flushes float32 denormals to zero; both
    settings are restored afterwards (flush-denormal to torch's default, off). The global RNG is
    forked, so the caller's random state is untouched.
    """
    cfg = _cfg(config)
    cfg["weight_decay"] = float(weight_decay)
    return fit_folder(out_dir, cfg, _build, progress=progress, who="sedviz.demo.train_run")


def _build(cfg: dict):
    """The demo model and its (train, val) splits for ``cfg`` (the builder fit_folder takes)."""
    return make_model(cfg), dataset("train", cfg), dataset("val", cfg)


def fit_folder(out_dir, cfg: dict, build, *, progress: bool = True, who: str = "sedviz.demo") -> Path:
    """Train ``build(cfg) -> (model, (x_train, y_train), (x_val, y_val))`` into the folder ``out_dir``.

    The training of :func:`train_run`, shared with :mod:`sedviz.suite` (which builds other models
    and tasks): ``cfg`` must hold steps, every, lr, betas, eps, weight_decay, warmup_steps, seed,
    threads and flush_denormal; it is written to config.json with the sedviz version.
    """
    out = Path(out_dir)
    steps, every = int(cfg["steps"]), int(cfg["every"])
    if steps < 1 or every < 1:
        raise ValueError(f"{who}: steps ({steps}) and every ({every}) must be >= 1")
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("step_*.pt"), out / "metrics.csv", out / "config.json"]:
        old.unlink(missing_ok=True)

    rows = _run_training(cfg, build, out.name, progress,
                         lambda model, step, row: _save_state(model, out / f"step_{step:06d}.pt"))

    with open(out / "metrics.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(_METRICS)
        for step, *vals in rows:
            writer.writerow([step, *(repr(v) for v in vals)])
    meta = dict(cfg, betas=list(cfg["betas"]), sedviz_version=__version__)
    (out / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def train_demo(out_dir, *, config: dict | None = None, progress: bool = True) -> list[Path]:
    """Train both demo runs (RUNS) into ``out_dir/grok_wd1`` and ``out_dir/grok_wd0``; return the folders."""
    root = Path(out_dir)
    return [
        train_run(root / name, weight_decay=spec["weight_decay"], config=config, progress=progress)
        for name, spec in RUNS.items()
    ]


def _run_training(cfg: dict, build, name: str, progress: bool, save) -> list[tuple]:
    """Build the model and data with ``build(cfg)`` and run :func:`_train` under the demo's thread
    and denormal settings and a forked RNG, restored afterwards."""
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, min(int(cfg["threads"]), prev_threads)))
    # Once the training set is memorized, gradients and Adam's second moments fall below float32's
    # normal range, and denormal arithmetic made whole runs 4-5x slower on CPU (measured). Flushing
    # them to zero changed no logged metric in a 3000-step comparison (Adam's eps dominates there).
    torch.set_flush_denormal(bool(cfg["flush_denormal"]))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(cfg["seed"]))  # nothing random is drawn in training; seeded for safety
            model, train, val = build(cfg)
            return _train(cfg, model, train, val, name, progress, save)
    finally:
        torch.set_flush_denormal(False)  # torch's default
        torch.set_num_threads(prev_threads)


def record_demo(store, *, config: dict | None = None, progress: bool = True, **options) -> Path:
    """Train both demo runs recording their spectra live into ``store`` (:class:`sedviz.Recorder`,
    at the checkpoint steps of :func:`train_run`, with the same metrics); no checkpoint is written.
    ``options`` go to the Recorder (e.g. ``sva_k``). Returns the store's path."""
    from .recorder import Recorder

    for name, spec in RUNS.items():
        cfg = _cfg(config)
        cfg["weight_decay"] = float(spec["weight_decay"])
        # n_heads as compute() reads it from the config.json that train_run writes
        with Recorder(store, run=name, every=int(cfg["every"]), **{"n_heads": int(cfg["n_heads"]), **options}) as rec:
            def save(model, step, row, rec=rec):
                rec.record(model, step, metrics=dict(zip(_METRICS[1:], row[1:])), force=True)

            _run_training(cfg, _build, name, progress, save)
    return Path(store)


def _train(cfg: dict, model: nn.Module, train, val, name: str, progress: bool, save) -> list[tuple]:
    """The training loop: ``save(model, step, row)`` at every checkpoint step (step 0, every
    ``every`` steps, the last step); returns the metrics rows."""
    steps, every = int(cfg["steps"]), int(cfg["every"])
    (x_train, y_train), (x_val, y_val) = train, val
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg["lr"], betas=cfg["betas"], eps=cfg["eps"], weight_decay=cfg["weight_decay"]
    )
    warmup = max(int(cfg["warmup_steps"]), 0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)

    rows = []
    bar = _progress(steps, name, progress)
    for step in range(steps + 1):
        model.train()
        logits = model(x_train)
        loss = F.cross_entropy(logits, y_train)
        if step % every == 0 or step == steps:
            train_acc = float((logits.detach().argmax(-1) == y_train).float().mean())
            model.eval()
            with torch.no_grad():
                val_loss, val_acc = _loss_acc(model(x_val), y_val)
            rows.append((step, float(loss.detach()), train_acc, val_loss, val_acc))
            save(model, step, rows[-1])
            bar.update(step, rows[-1])
            model.train()
        if step == steps:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    bar.close()
    return rows


class _progress:
    """A tqdm bar over steps with the latest metrics, or nothing when ``enabled`` is False."""

    def __init__(self, total: int, name: str, enabled: bool):
        self.bar = None
        self.last = 0
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=f"sedviz demo {name}", unit="step", leave=True)

    def update(self, step: int, row: tuple) -> None:
        if self.bar is None:
            return
        self.bar.update(step - self.last)
        self.last = step
        self.bar.set_postfix(train_acc=f"{row[2]:.3f}", val_acc=f"{row[4]:.3f}", val_loss=f"{row[3]:.3g}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
