"""Tiny models of the architectures sedviz must read, built by their own libraries (random weights,
no downloads), and the saving code users run: ``save_pretrained`` (safetensors + config.json) and
``torch.save(model.state_dict())``."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def hf_model(arch: str):
    """A tiny transformers model of ``arch`` (seeded)."""
    import transformers as T

    torch.manual_seed(0)
    small = dict(vocab_size=50)
    if arch == "gpt2":
        return T.GPT2LMHeadModel(T.GPT2Config(n_embd=64, n_head=4, n_layer=2, n_positions=16, **small))
    if arch == "gpt_neox":
        return T.GPTNeoXForCausalLM(T.GPTNeoXConfig(hidden_size=64, num_attention_heads=4, num_hidden_layers=1,
                                                    intermediate_size=128, max_position_embeddings=16, **small))
    if arch in ("llama", "mistral", "qwen2"):
        cfg = dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=1,
                   intermediate_size=96, max_position_embeddings=16, **small)
        Config, Model = {"llama": (T.LlamaConfig, T.LlamaForCausalLM), "mistral": (T.MistralConfig, T.MistralForCausalLM),
                         "qwen2": (T.Qwen2Config, T.Qwen2ForCausalLM)}[arch]
        return Model(Config(**cfg))
    if arch == "opt":
        return T.OPTForCausalLM(T.OPTConfig(hidden_size=64, num_attention_heads=4, num_hidden_layers=1, ffn_dim=128,
                                            max_position_embeddings=16, word_embed_proj_dim=64, **small))
    if arch == "bert":
        return T.BertForSequenceClassification(T.BertConfig(hidden_size=64, num_attention_heads=4, num_hidden_layers=1,
                                                            intermediate_size=128, max_position_embeddings=16, **small))
    if arch == "t5":
        return T.T5ForConditionalGeneration(T.T5Config(d_model=64, num_heads=4, num_layers=1, num_decoder_layers=1,
                                                       d_ff=128, d_kv=16, **small))
    if arch == "vit":
        return T.ViTForImageClassification(T.ViTConfig(hidden_size=64, num_attention_heads=4, num_hidden_layers=1,
                                                       intermediate_size=128, image_size=16, patch_size=8, num_labels=3))
    raise ValueError(arch)


HF_ARCHS = ("gpt2", "gpt_neox", "llama", "mistral", "qwen2", "opt", "bert", "t5", "vit")


def save_pretrained_run(model, root: Path, step: int = 1, **kwargs) -> Path:
    """``save_pretrained`` into ``root/checkpoint-STEP`` (safetensors, names sorted, config.json)."""
    model.save_pretrained(root / f"checkpoint-{step}", **kwargs)
    return root


def save_pt_and_safetensors(model, root: Path, step: int = 1, config: dict | None = None) -> tuple[Path, Path]:
    """The same state dict twice: ``torch.save`` (module order) in ``root/pt/step_STEP.pt`` and
    ``safetensors.torch.save_file`` (keys sorted by name) in ``root/st/step_STEP.safetensors``,
    each with the model's config.json beside it. safetensors stores a tied tensor once: the copy
    kept is the first name in module order, as ``save_pretrained`` keeps it."""
    from safetensors.torch import save_file

    pt, st = root / "pt", root / "st"
    pt.mkdir(parents=True, exist_ok=True)
    st.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), pt / f"step_{step}.pt")
    seen, once = set(), {}
    for name, t in model.state_dict().items():
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            once[name] = t.contiguous()
    save_file(once, str(st / f"step_{step}.safetensors"))
    if config is None and hasattr(model, "config"):
        config = model.config.to_dict()
    if config is not None:
        for folder in (pt, st):
            (folder / "config.json").write_text(json.dumps(config, default=str))
    return pt, st


# ------------------------------------------------------------------ plain torch models


class MinimalAttention(nn.Module):
    """A hand-written attention block with the given projection names."""

    def __init__(self, d: int, names: tuple[str, str, str, str] | str, params: bool = False):
        super().__init__()
        self.names = names
        if isinstance(names, str):  # fused
            setattr(self, names, nn.Linear(d, 3 * d))
            self.o = nn.Linear(d, d)
        elif params:
            for n in names:
                setattr(self, n, nn.Parameter(torch.randn(d, d) / d**0.5))
        else:
            for n in names:
                setattr(self, n, nn.Linear(d, d))


class MinimalBlock(nn.Module):
    def __init__(self, d, attn_name, names, params=False, mlp=("fc1", "fc2")):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        setattr(self, attn_name, MinimalAttention(d, names, params))
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Module()
        setattr(self.mlp, mlp[0], nn.Linear(d, 4 * d))
        setattr(self.mlp, mlp[1], nn.Linear(4 * d, d))


class MinimalTransformer(nn.Module):
    """tok_emb, pos_emb, blocks.N.{attn.*, mlp.*}, ln_f, head: the usual hand-written GPT."""

    def __init__(self, attn_name="attn", names=("q", "k", "v", "o"), params=False, d=32, n_layer=2, vocab=20):
        super().__init__()
        torch.manual_seed(0)
        self.tok_emb = nn.Embedding(vocab, d)
        self.pos_emb = nn.Embedding(8, d)
        self.blocks = nn.ModuleList(MinimalBlock(d, attn_name, names, params) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)


def write_config(folder: Path, **config) -> None:
    (folder / "config.json").write_text(json.dumps(config))
