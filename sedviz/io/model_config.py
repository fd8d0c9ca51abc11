"""A model's ``config.json`` beside its weights: what the names of the weights cannot tell.

Hugging Face ``save_pretrained`` writes ``config.json`` next to ``model.safetensors``; the sedviz
demo writes one too. sedviz reads from it only what decides layer roles and pairs: the model
family (``model_type``), the number of attention heads, of key/value heads (grouped-query
attention) and the head width, and whether the output head is tied to the token embedding.
Nothing in it is executed; an unreadable file is reported and ignored.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CONFIG_FILE = "config.json"

# Keys of the head counts in the configs of common families (first found wins).
_HEADS_KEYS = ("num_attention_heads", "n_head", "n_heads", "num_heads", "encoder_attention_heads", "decoder_attention_heads")
_KV_HEADS_KEYS = ("num_key_value_heads", "n_kv_heads", "num_kv_heads", "n_head_kv", "multi_query_group_num")
_HEAD_DIM_KEYS = ("head_dim", "d_kv", "kv_channels", "attention_head_size")


@dataclass(frozen=True)
class ModelConfig:
    """What sedviz uses of a ``config.json`` (None where it does not say)."""

    path: Path
    model_type: str | None = None
    n_heads: int | None = None
    n_kv_heads: int | None = None
    head_dim: int | None = None
    tied_embeddings: bool | None = None


def _int(value) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def parse_model_config(data: Mapping, path: Path) -> ModelConfig:
    """The :class:`ModelConfig` of a parsed ``config.json`` (a nested ``text_config`` is used when
    the top level has no head count, as in multimodal configs)."""
    if not any(k in data for k in _HEADS_KEYS) and isinstance(data.get("text_config"), Mapping):
        inner = parse_model_config(data["text_config"], path)
        return ModelConfig(path, data.get("model_type") or inner.model_type, inner.n_heads, inner.n_kv_heads,
                           inner.head_dim, inner.tied_embeddings)
    first = lambda keys: next((_int(data[k]) for k in keys if _int(data.get(k)) is not None), None)  # noqa: E731
    kv = first(_KV_HEADS_KEYS)
    if kv is None and data.get("multi_query") is True:
        kv = 1
    tied = data.get("tie_word_embeddings")
    model_type = data.get("model_type")
    return ModelConfig(
        path=path,
        model_type=str(model_type) if isinstance(model_type, str) else None,
        n_heads=first(_HEADS_KEYS),
        n_kv_heads=kv,
        head_dim=first(_HEAD_DIM_KEYS),
        tied_embeddings=tied if isinstance(tied, bool) else None,
    )


def read_model_config(path) -> ModelConfig | None:
    """Read a ``config.json`` file (or the one in a folder); None when there is none.

    An unreadable or non-object file gives a warning naming it and None: the weights are still read,
    with head counts guessed as without a config.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        warnings.warn(f"{path}: not readable JSON ({exc}); ignored, so head counts are guessed. Fix or remove the file",
                      UserWarning, stacklevel=2)
        return None
    if not isinstance(data, Mapping):
        warnings.warn(f"{path}: not a JSON object; ignored, so head counts are guessed", UserWarning, stacklevel=2)
        return None
    return parse_model_config(data, path)
