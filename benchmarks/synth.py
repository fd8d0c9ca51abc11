"""Synthetic GPT-2-shaped checkpoints for the benchmarks.

Shapes follow GPT-2 small (124M): ``transformer.wte`` (vocab, d), ``transformer.wpe`` (ctx, d), per
block ``ln_1``/``ln_2`` weight and bias, ``attn.c_attn``, ``attn.c_proj``, ``mlp.c_fc``,
``mlp.c_proj`` (weight and bias), then ``ln_f``. ``layout="conv1d"`` stores the four block
matrices as Hugging Face's GPT-2 ``Conv1D`` does, (in, out): c_attn (d, 3d), c_fc (d, 4d);
``layout="linear"`` stores them as ``nn.Linear`` does, (out, in). ``lm_head`` is tied to ``wte``
and, as in a real state dict, not saved twice.

Weights are random: Gaussian N(0, 0.02^2) plus a rank-8 part with decaying singular values, so
that spectra have a few separated top values, as trained layers do. Consecutive checkpoints
differ by small random updates (1e-3 of the weights' scale) plus a slow drift of the rank-8 part.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Config:
    d: int = 768
    n_layer: int = 12
    vocab: int = 50257
    n_ctx: int = 1024
    layout: str = "conv1d"  # or "linear"

    def shapes(self) -> dict[str, tuple[int, ...]]:
        d, conv1d = self.d, self.layout == "conv1d"
        io = (lambda i, o: (i, o)) if conv1d else (lambda i, o: (o, i))
        out: dict[str, tuple[int, ...]] = {
            "transformer.wte.weight": (self.vocab, d),
            "transformer.wpe.weight": (self.n_ctx, d),
        }
        for b in range(self.n_layer):
            p = f"transformer.h.{b}."
            out[p + "ln_1.weight"] = (d,)
            out[p + "ln_1.bias"] = (d,)
            out[p + "attn.c_attn.weight"] = io(d, 3 * d)
            out[p + "attn.c_attn.bias"] = (3 * d,)
            out[p + "attn.c_proj.weight"] = io(d, d)
            out[p + "attn.c_proj.bias"] = (d,)
            out[p + "ln_2.weight"] = (d,)
            out[p + "ln_2.bias"] = (d,)
            out[p + "mlp.c_fc.weight"] = io(d, 4 * d)
            out[p + "mlp.c_fc.bias"] = (4 * d,)
            out[p + "mlp.c_proj.weight"] = io(4 * d, d)
            out[p + "mlp.c_proj.bias"] = (d,)
        out["transformer.ln_f.weight"] = (d,)
        out["transformer.ln_f.bias"] = (d,)
        return out

    def n_params(self) -> int:
        return sum(math.prod(s) for s in self.shapes().values())

    def n_heads(self) -> int:
        return max(1, self.d // 64)


FULL = Config()


def quick_config(layout: str = "conv1d") -> Config:
    """GPT-2's structure at a small width: d=128 (two 64-wide heads), 2 blocks, 2000 tokens."""
    return Config(d=128, n_layer=2, vocab=2000, n_ctx=256, layout=layout)


class Trajectory:
    """Checkpoint i of a synthetic training run (deterministic in ``seed``), built step by step."""

    RANK = 8

    def __init__(self, cfg: Config, seed: int = 0):
        self.cfg = cfg
        self.g = torch.Generator().manual_seed(seed)
        self.state: dict[str, torch.Tensor] = {}
        self.signal: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        for name, shape in cfg.shapes().items():
            if len(shape) == 1:
                base = torch.ones(shape) if name.endswith("weight") else torch.zeros(shape)
                self.state[name] = base + 0.02 * torch.randn(shape, generator=self.g)
                continue
            w = 0.02 * torch.randn(shape, generator=self.g)
            m, n = shape
            r = min(self.RANK, m, n)
            a = torch.randn(m, r, generator=self.g) / math.sqrt(m)
            b = torch.randn(n, r, generator=self.g) / math.sqrt(n)
            s = 0.02 * math.sqrt(max(m, n)) * 3.0 * 0.7 ** torch.arange(r, dtype=torch.float32)
            w.addmm_(a * s, b.T)
            self.state[name] = w
            self.signal[name] = (a, s, b)

    def advance(self, lr: float = 1e-3) -> dict[str, torch.Tensor]:
        """One saved interval of 'training': a small random update and a drift of the signal."""
        for name, t in self.state.items():
            t.add_(torch.randn(t.shape, generator=self.g), alpha=0.02 * lr)
            if name in self.signal:
                a, s, b = self.signal[name]
                t.addmm_(a * (0.02 * s), b.T)  # the top singular values grow a little each interval
        return self.state


def save_pt(state: dict[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def save_safetensors(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)


def step_name(i: int) -> str:
    return f"step_{(i + 1) * 100:06d}"


def build(cfg: Config, folder: Path, n: int, *, n_safetensors: int = 0, seed: int = 0, log=print) -> dict:
    """Write ``n`` checkpoints as .pt (and the first ``n_safetensors`` also as .safetensors).

    Returns {"pt": [paths], "safetensors": [paths], "bytes": size of one .pt}. Files that already
    exist with the same config (recorded in ``folder/config.txt``) are reused.
    """
    folder = Path(folder)
    pt_dir, st_dir = folder / "pt", folder / "safetensors"
    stamp = f"{cfg} seed={seed}"
    cfg_file = folder / "config.txt"
    if cfg_file.exists() and cfg_file.read_text() != stamp:
        import shutil

        shutil.rmtree(folder)
    pt_dir.mkdir(parents=True, exist_ok=True)
    st_dir.mkdir(parents=True, exist_ok=True)
    cfg_file.write_text(stamp)
    pts = [pt_dir / f"{step_name(i)}.pt" for i in range(n)]
    sts = [st_dir / f"{step_name(i)}.safetensors" for i in range(n_safetensors)]
    need = [i for i in range(n) if not pts[i].exists()] + [i for i in range(n_safetensors) if not sts[i].exists()]
    if need:
        traj = Trajectory(cfg, seed)
        for i in range(max(need) + 1):
            state = traj.advance()
            if not pts[i].exists():
                save_pt(state, pts[i])
            if i < n_safetensors and not sts[i].exists():
                save_safetensors(state, sts[i])
            log(f"  built checkpoint {i + 1}/{n}")
    return {"pt": pts, "safetensors": sts, "bytes": pts[0].stat().st_size}


def link_run(files: list[Path], folder: Path) -> Path:
    """A run folder holding hard links (or copies) to ``files``: what compute() is pointed at."""
    import shutil

    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for f in files:
        try:
            os.link(f, folder / f.name)
        except OSError:
            shutil.copy2(f, folder / f.name)
    return folder
