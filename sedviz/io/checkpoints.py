"""Reading one checkpoint into a flat ``name -> tensor`` dict, safely.

Formats (DESIGN "Checkpoints it must read"): torch state dicts (``*.pt``, ``*.pth``, ``*.bin``),
dicts wrapping one (``state_dict``, ``model``, ``module``, ``model_state_dict``, ``model_state``,
nested), Lightning ``.ckpt``, safetensors files, sharded sets with a ``*.index.json``, and
Hugging Face ``checkpoint-N/`` folders.

Nothing pickled is ever executed: torch files go through ``torch.load(weights_only=True)`` (with
``mmap=True`` for zipfile-format files, so tensors are views of the mapped file, not copies), and
safetensors through ``safe_open`` (memory-mapped). Every failure becomes a
:class:`~sedviz.errors.CheckpointError` naming the file and the fix, raised from the original.
"""
from __future__ import annotations

import json
import pickle
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath

import torch

from sedviz.errors import CheckpointError

# Wrapper keys, in the order they are tried; a wrapped value must itself be a mapping.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "module")
# Keys that hold the optimizer step inside a wrapped checkpoint, most specific first.
STEP_KEYS = ("global_step", "step", "iter_num", "iteration")
# Prefixes added by DDP (module.) and torch.compile (_orig_mod.): stripped when every key has one.
_WRAP_PREFIXES = ("module.", "_orig_mod.")
# Files that make a folder a Hugging Face model folder, in the order they are preferred.
HF_MODEL_FILES = (
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
)
HF_TRAINER_STATE = "trainer_state.json"
INDEX_SUFFIXES = (".safetensors.index.json", ".bin.index.json")

_ZIP_MAGIC = b"PK\x03\x04"
_LFS_MAGIC = b"version https://git-lfs"

_SAVE_FIX = (
    "Save only the weights, e.g. torch.save(model.state_dict(), path) or "
    "safetensors.torch.save_file(model.state_dict(), path)"
)
_CORRUPT_FIX = (
    "The file looks truncated or corrupted (an interrupted save or copy?): save or copy it "
    "again, or move it out of the run folder"
)


def format_of(path: Path) -> str | None:
    """The ``CheckpointRef.fmt`` a path would have, from its name alone (None: not a checkpoint name)."""
    path = Path(path)
    if path.is_dir():
        return "hf_dir"
    name = path.name.lower()
    if name.endswith(INDEX_SUFFIXES):
        return "safetensors_sharded"
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return "safetensors"
    if suffix == ".ckpt":
        return "lightning"
    if suffix in (".pt", ".pth", ".bin"):
        return "torch"
    return None


def sniff(path: Path) -> str:
    """What the first bytes of a file say it is: zip, pickle, safetensors, lfs, empty or unknown."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
    except OSError as exc:
        raise CheckpointError(path, f"cannot be opened ({exc.strerror})", "Check that it exists and is readable") from exc
    if not head:
        return "empty"
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    if head.startswith(_LFS_MAGIC):
        return "lfs"
    if head[:1] == b"\x80":  # pickle protocol >= 2: the legacy torch.save format
        return "pickle"
    if len(head) > 8 and head[8:9] == b"{":  # 8-byte little-endian header length, then JSON
        return "safetensors"
    return "unknown"


def hf_model_file(folder: Path) -> Path | None:
    """The weights file of a Hugging Face style folder, or None when it has none."""
    for name in HF_MODEL_FILES:
        candidate = Path(folder) / name
        if candidate.is_file():
            return candidate
    return None


def _natural_key(text: str):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _as_step(value) -> int | None:
    """An int step from a stored value (int, integral float, one-element integer tensor, or digit string)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        return int(value.item())
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _step_from_mapping(obj) -> int | None:
    if not isinstance(obj, Mapping):
        return None
    for key in STEP_KEYS:
        if key in obj:
            step = _as_step(obj[key])
            if step is not None:
                return step
    return None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return first if len(first) <= 200 else first[:197] + "..."


def _check_file(path: Path) -> str:
    """Sniff a file that should be a checkpoint, raising for the cases no reader can handle."""
    if not path.exists():
        raise CheckpointError(path, "does not exist", "Check the path (a typo, or a file moved since discovery?)")
    if path.is_dir():
        raise CheckpointError(
            path,
            "is a folder with none of " + ", ".join(HF_MODEL_FILES),
            "Pass a checkpoint file, or a checkpoint-N/ folder that holds model.safetensors or pytorch_model.bin",
        )
    kind = sniff(path)
    if kind == "empty":
        raise CheckpointError(
            path,
            "is empty (0 bytes)",
            "The save was probably interrupted or the disk was full: save the checkpoint again, or delete the file",
        )
    if kind == "lfs":
        raise CheckpointError(
            path,
            "is a Git LFS pointer, not the checkpoint itself",
            "Fetch the real file with `git lfs pull` in its repository",
        )
    if kind == "unknown":
        raise CheckpointError(
            path,
            "is neither a torch.save file nor a safetensors file (unrecognised first bytes)",
            "Check that this is a checkpoint; sedviz reads files written by torch.save or safetensors",
        )
    return kind


# ---------------------------------------------------------------------------------------------
# torch files


def _load_torch(path: Path, kind: str):
    """torch.load with weights_only=True (never runs pickled code); mmap for zipfile-format files."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=(kind == "zip"))
    except pickle.UnpicklingError as exc:
        raise _unsafe_error(path, kind, exc) from exc
    except Exception as exc:  # zip/pickle corruption surfaces as RuntimeError, EOFError, ...
        size = path.stat().st_size
        raise CheckpointError(
            path, f"cannot be read as a torch checkpoint ({size} bytes; torch says: {_short(exc)})", _CORRUPT_FIX
        ) from exc


def _unsafe_error(path: Path, kind: str, exc: BaseException) -> CheckpointError:
    text = str(exc)
    names: list[str] = []
    if kind == "zip":
        try:  # lists the globals without importing or running anything
            names = list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        except Exception:
            names = []
    if not names:
        names = re.findall(r"GLOBAL (\S+) was not an allowed global", text)
    if names:
        shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        problem = (
            f"holds pickled Python objects other than tensors ({shown}); loading them could run code, "
            "so sedviz refused (it only uses torch.load(weights_only=True))"
        )
    elif "Unsupported operand" in text:
        problem = (
            "is a plain pickle, not a file torch.save wrote, and sedviz refused to unpickle it "
            "(it only uses torch.load(weights_only=True))"
        )
    else:
        problem = f"could not be loaded safely with torch.load(weights_only=True) ({_short(exc)})"
    fix = (
        f"{_SAVE_FIX}. If the file is yours and you trust it, load it once yourself with "
        "weights_only=False and re-save its state dict"
    )
    return CheckpointError(path, problem, fix)


def _describe(obj) -> str:
    if isinstance(obj, Mapping):
        keys = [repr(k) for k in list(obj.keys())[:8]]
        more = f", ... ({len(obj)} keys)" if len(obj) > 8 else ""
        return "a dict with no tensors (keys: " + (", ".join(keys) + more if keys else "none") + ")"
    if isinstance(obj, torch.Tensor):
        return f"a single tensor of shape {tuple(obj.shape)}, not a dict of named tensors"
    return f"a {type(obj).__name__}, not a state dict"


def _unwrap(obj, path: Path) -> tuple[dict[str, torch.Tensor], bool]:
    """Descend through wrapper keys; return the tensor entries and whether it was a Lightning file."""
    lightning = isinstance(obj, Mapping) and any(k in obj for k in ("pytorch-lightning_version", "lightning_version"))
    while isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                obj = inner
                break
        else:
            break
    if not isinstance(obj, Mapping):
        raise CheckpointError(path, f"holds {_describe(obj)}", f"{_SAVE_FIX}")
    tensors = {}
    for key, value in obj.items():
        if isinstance(key, str) and isinstance(value, torch.Tensor):
            tensors[key] = value.detach() if isinstance(value, torch.nn.Parameter) else value
    if not tensors:
        nested = [repr(k) for k, v in obj.items() if isinstance(v, Mapping)]
        hint = (
            f"; it holds dicts under {', '.join(nested[:5])}, but sedviz looks for the state dict at the top "
            f"or under {', '.join(repr(k) for k in WRAPPER_KEYS)}"
            if nested
            else ""
        )
        raise CheckpointError(path, f"holds {_describe(obj)}{hint}", _SAVE_FIX)
    return tensors, lightning


def strip_prefixes(state: dict[str, torch.Tensor], *, lightning: bool) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes that every key shares: ``module.`` (DDP), ``_orig_mod.`` (torch.compile),
    and, for Lightning checkpoints, one ``model.`` (the LightningModule attribute)."""
    prefixes = list(_WRAP_PREFIXES)
    model_left = lightning
    changed = True
    while changed and state:
        changed = False
        for prefix in prefixes + (["model."] if model_left else []):
            if all(k.startswith(prefix) and len(k) > len(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
                if prefix == "model.":
                    model_left = False
                break
    return state


def _read_torch(path: Path, kind: str, *, lightning: bool) -> dict[str, torch.Tensor]:
    obj = _load_torch(path, kind)
    tensors, found_lightning = _unwrap(obj, path)
    return strip_prefixes(tensors, lightning=lightning or found_lightning)


# ---------------------------------------------------------------------------------------------
# safetensors and sharded sets


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            # safetensors stores names sorted lexically; natural order keeps h.2 before h.10.
            names = sorted(fh.keys(), key=_natural_key)
            tensors = {name: fh.get_tensor(name) for name in names}
    except Exception as exc:
        size = path.stat().st_size
        raise CheckpointError(
            path, f"cannot be read as a safetensors file ({size} bytes; safetensors says: {_short(exc)})", _CORRUPT_FIX
        ) from exc
    if not tensors:
        raise CheckpointError(path, "holds no tensors", "Check that the right file was saved")
    return strip_prefixes(tensors, lightning=False)


def _read_index(index: Path) -> dict:
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            index, f"is not a readable JSON shard index ({_short(exc)})", "Restore the index file written with the shards"
        ) from exc
    if not isinstance(data, Mapping) or not isinstance(data.get("weight_map"), Mapping) or not data["weight_map"]:
        raise CheckpointError(
            index, "has no 'weight_map' (tensor name -> shard file)", "Restore the index file written with the shards"
        )
    return data


def index_shards(index: Path) -> list[Path]:
    """The shard files a ``*.index.json`` names, in first-use order. Each must be a plain relative
    path inside the index's folder: an absolute path or one through ``..`` raises
    :class:`~sedviz.errors.CheckpointError` (an index must not make sedviz read other files)."""
    weight_map = _read_index(index)["weight_map"]
    shards = []
    for name in dict.fromkeys(str(v) for v in weight_map.values()):
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if not parts or name.startswith(("/", "\\")) or PureWindowsPath(name).drive or ".." in parts or "\x00" in name:
            raise CheckpointError(
                index,
                f"names the shard {name!r}, which is not a file name inside {index.parent}",
                "A sharded checkpoint's index must name its shards by file name, beside the index "
                "(e.g. model-00001-of-00002.safetensors); restore the index file written with the shards",
            )
        shards.append(index.parent / name)
    return shards


def _read_sharded(index: Path) -> dict[str, torch.Tensor]:
    weight_map = _read_index(index)["weight_map"]
    merged: dict[str, torch.Tensor] = {}
    for shard in index_shards(index):
        if not shard.is_file():
            raise CheckpointError(
                index,
                f"names the shard {shard.name}, which is missing",
                f"Put {shard.name} back beside the index (all shards of a checkpoint must be present)",
            )
        if shard.name.lower().endswith(".safetensors"):
            part = _read_safetensors(shard)
        else:
            part = _read_torch(shard, _check_file(shard), lightning=False)
        merged.update(part)
    missing = [name for name in weight_map if name not in merged]
    if missing:
        raise CheckpointError(
            index,
            f"lists {len(missing)} tensors the shards do not hold (first: {missing[0]!r})",
            "The shards and the index are from different saves, or a shard is incomplete: save the checkpoint again",
        )
    names = sorted(merged, key=_natural_key)
    return strip_prefixes({name: merged[name] for name in names}, lightning=False)


# ---------------------------------------------------------------------------------------------
# public


def _path_and_format(path_or_ref) -> tuple[Path, str | None]:
    fmt = getattr(path_or_ref, "fmt", None)
    path = Path(getattr(path_or_ref, "path", path_or_ref)).expanduser()
    if not path.exists():
        raise CheckpointError(path, "does not exist", "Check the path (a typo, or a file moved since discovery?)")
    return path, fmt or format_of(path)


def read_state(path_or_ref) -> dict[str, torch.Tensor]:
    """Read one checkpoint into a flat ``{name: tensor}`` dict on the CPU, tensors only.

    ``path_or_ref`` is a file, a ``checkpoint-N/`` folder, a ``*.index.json`` of a sharded set, or a
    :class:`~sedviz.io.discover.CheckpointRef`. Wrapper dicts are unwrapped, optimizer state and
    non-tensor entries dropped, and shared ``module.``/``_orig_mod.`` prefixes (and Lightning's
    ``model.``) removed. Torch zipfile checkpoints and safetensors are memory-mapped, not copied:
    do not modify the returned tensors in place. Names keep the file's order (state-dict order for
    torch; natural name order for safetensors, which does not store the module order).

    Raises :class:`~sedviz.errors.CheckpointError` for anything unreadable or unsafe.
    """
    path, fmt = _path_and_format(path_or_ref)
    if path.is_dir():
        model_file = hf_model_file(path)
        if model_file is None:
            found = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "nothing"
            raise CheckpointError(
                path,
                f"has none of {', '.join(HF_MODEL_FILES)} (found: {found})",
                "Pass a checkpoint-N/ folder that holds the model weights, or the weights file itself",
            )
        return read_state(model_file)
    if path.name.lower().endswith(INDEX_SUFFIXES):
        return _read_sharded(path)
    kind = _check_file(path)
    if kind == "safetensors":
        return _read_safetensors(path)
    return _read_torch(path, kind, lightning=(fmt == "lightning" or path.suffix.lower() == ".ckpt"))


def read_step_key(path) -> int | None:
    """The optimizer step stored inside a checkpoint, or None when it stores none.

    Torch files: a top-level ``global_step``, ``step``, ``iter_num`` or ``iteration`` entry of a
    wrapped dict. Safetensors: the same keys in the header metadata (``index.json`` metadata for
    sharded sets). ``checkpoint-N/`` folders: ``global_step`` of their ``trainer_state.json``.
    Loading is as safe as :func:`read_state`, and errors are the same.
    """
    path, _ = _path_and_format(path)
    if path.is_dir():
        state_file = path / HF_TRAINER_STATE
        if state_file.is_file():
            return trainer_state_step(state_file)
        model_file = hf_model_file(path)
        return read_step_key(model_file) if model_file is not None else None
    if path.name.lower().endswith(INDEX_SUFFIXES):
        return _step_from_mapping(_read_index(path).get("metadata"))
    kind = _check_file(path)
    if kind == "safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as fh:
                metadata = fh.metadata() or {}
        except Exception as exc:
            raise CheckpointError(
                path, f"cannot be read as a safetensors file (safetensors says: {_short(exc)})", _CORRUPT_FIX
            ) from exc
        return _step_from_mapping(metadata)
    obj = _load_torch(path, kind)
    return _step_from_mapping(obj)


def trainer_state_step(path: Path) -> int | None:
    """``global_step`` of a Hugging Face ``trainer_state.json`` (None when absent or unreadable)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return _step_from_mapping(data) if isinstance(data, Mapping) else None
