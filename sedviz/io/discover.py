"""Finding the checkpoints and metric logs of a run, and the optimizer step of each checkpoint.

A run is a folder (DESIGN "Checkpoints it must read"). Its checkpoints are found by name:
``*.pt``, ``*.pth``, ``*.bin``, ``*.ckpt``, ``*.safetensors``, sharded sets (``*.index.json`` with
their shards) and Hugging Face style folders holding ``model.safetensors`` / ``pytorch_model.bin``.
Subfolders are searched too (``lightning_logs/version_0/checkpoints/``), down to a few levels.

A Hugging Face hub cache folder of one model (``models--ORG--NAME/``, as ``from_pretrained(...,
revision="step1000")`` leaves it: ``refs/<revision>`` holds a commit hash, ``snapshots/<hash>/``
the files) is one run: each revision whose name carries a step (``step1000``) is a checkpoint;
others (``main``) are skipped when they repeat a stepped snapshot, with a warning otherwise.

The model's ``config.json`` (the newest checkpoint's, else the run folder's) is read into
``RunSource.model_config`` (:mod:`sedviz.io.model_config`): heads and model family for pairs.

The step of a checkpoint comes, in this order, from its own name (``step_000100.pt``,
``epoch=3-step=1760.ckpt``, ``checkpoint-500/``, ``model_500.pt``), from a ``step_N`` /
``checkpoint-N`` folder above it, from a ``step``/``global_step`` key stored inside it, or, for
Hugging Face weight files, from the ``trainer_state.json`` beside them. Steps sort numerically.

Discovery opens files only to read a few leading bytes, and to read the step key of files whose
names carry no step.
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from sedviz.errors import CheckpointError, SedvizError
from sedviz.io.checkpoints import (
    HF_MODEL_FILES,
    HF_TRAINER_STATE,
    INDEX_SUFFIXES,
    format_of,
    index_shards,
    read_step_key,
    sniff,
    trainer_state_step,
)
from sedviz.io.model_config import CONFIG_FILE, ModelConfig, read_model_config

FORMATS = ("torch", "lightning", "safetensors", "safetensors_sharded", "hf_dir")
ON_ERROR = ("raise", "skip")

# How deep below the run folder to look (lightning_logs/version_0/checkpoints/ is depth 3).
_MAX_DEPTH = 4
# Number tags that are an optimizer step, and tags that are something else.
_STEP_TAGS = {"step", "steps", "global_step", "iter", "iters", "iteration", "it", "checkpoint", "ckpt"}
_NOT_STEP_TAGS = {
    "epoch", "epochs", "ep", "seed", "rank", "v", "version", "of", "shard", "fold", "run", "mp", "gpu",
    "node", "part", "layer", "layers", "split",
}
_NUMBER_RE = re.compile(r"(?:(?P<tag>[A-Za-z]+)(?P<sep>[=_\-. ]?))?(?P<num>\d+)")
_SHARD_RE = re.compile(r"-\d+-of-\d+$", re.IGNORECASE)
# Names of "the latest/best weights" files: without a step they are skipped when the run has others.
_ALIAS_RE = re.compile(
    r"^(last|final|best|latest|model|pytorch_model|final_model|best_model|model_final|checkpoint|ckpt|weights)"
    r"([-_]v\d+)?$",
    re.IGNORECASE,
)
# Files beside checkpoints that are not model weights.
_NOT_WEIGHTS_RE = re.compile(r"^(optimizer|optim|scheduler|lr_scheduler|rng_state|training_args|scaler)", re.I)
_STEP_COLUMNS = ("step", "global_step", "trainer/global_step")

_FIX_NAME = (
    "Put the optimizer step in the file name (e.g. step_000100.pt), or save it inside the checkpoint "
    "as a 'step' or 'global_step' entry"
)


@dataclass(frozen=True)
class CheckpointRef:
    """One checkpoint of a run: a file, or a folder for ``hf_dir``; ``fmt`` is one of FORMATS."""

    path: Path
    step: int
    fmt: str


@dataclass
class RunSource:
    """A run: its name, folder, checkpoints (ascending, unique steps), metric log files and the
    model's ``config.json`` (None when there is none)."""

    name: str
    root: Path
    checkpoints: list[CheckpointRef] = field(default_factory=list)
    metric_files: list[Path] = field(default_factory=list)
    model_config: ModelConfig | None = None


@dataclass
class _Candidate:
    path: Path
    fmt: str
    step: int | None = None
    alias: bool = False


def natural_key(text: str):
    """Sort key that orders embedded numbers numerically: step_2 < step_10 < step_100."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", str(text))]


def _stem(name: str) -> str:
    lower = name.lower()
    for suffix in INDEX_SUFFIXES + (".safetensors", ".ckpt", ".pth", ".pt", ".bin"):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def step_from_name(name: str, *, tagged_only: bool = False) -> int | None:
    """The optimizer step a file or folder name carries, or None.

    A number tagged ``step``/``global_step``/``iter``/``it``/``checkpoint``/``ckpt`` wins (the last
    such); otherwise the last number set apart by ``_``, ``-``, ``=`` or ``.`` that is not tagged
    ``epoch``, ``seed``, ``rank``, ``v``... (so ``model_500.pt`` is 500, ``gpt2.pt`` and
    ``epoch_3.pt`` carry none, ``epoch=3-step=1760.ckpt`` is 1760). ``tagged_only`` keeps only the
    first rule (used for folder names above a file).
    """
    stem = _stem(name)
    tagged, loose = None, None
    for match in _NUMBER_RE.finditer(stem):
        tag = (match.group("tag") or "").lower()
        number = int(match.group("num"))
        if tag in _STEP_TAGS:
            tagged = number
        elif tag in _NOT_STEP_TAGS:
            continue
        elif not tag or match.group("sep"):
            loose = number
    if tagged is not None:
        return tagged
    return None if tagged_only else loose


def _check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise SedvizError(f"on_error={on_error!r} is not one of {ON_ERROR}: pass 'raise' or 'skip'")


def _problem(on_error: str, error: CheckpointError, skipped: str = "skipped") -> None:
    if on_error == "raise":
        raise error
    warnings.warn(f"{error} ({skipped})", UserWarning, stacklevel=3)


def _is_model_dir(folder: Path) -> bool:
    return any((folder / name).is_file() for name in HF_MODEL_FILES)


def _scan(root: Path) -> tuple[list[Path], list[Path]]:
    """Files (not hidden) below root, and Hugging Face model folders (not entered), in natural order."""
    files: list[Path] = []
    model_dirs: list[Path] = []
    seen = {os.path.realpath(root)}

    def visit(folder: Path, depth: int) -> None:
        try:
            entries = sorted(folder.iterdir(), key=lambda p: natural_key(p.name))
        except OSError as exc:
            raise CheckpointError(folder, f"cannot be listed ({exc.strerror})", "Check its permissions") from exc
        for entry in entries:
            if entry.name.startswith(".") or entry.name == "__pycache__":
                continue
            if entry.is_dir():
                real = os.path.realpath(entry)
                if entry.is_symlink() and any(p == real or p.startswith(real + os.sep) for p in seen):
                    warnings.warn(f"{entry}: a symbolic link to {real}, a folder already searched (a link loop?); "
                                  "not searched again", UserWarning, stacklevel=4)
                    continue
                seen.add(real)
                if _is_model_dir(entry):
                    model_dirs.append(entry)
                elif depth < _MAX_DEPTH:
                    visit(entry, depth + 1)
            elif entry.is_file():
                files.append(entry)

    visit(root, 0)
    return files, model_dirs


def _folder_step(path: Path, root: Path) -> int | None:
    """A step tag on a folder between the file and the run folder. The run folder's own name counts
    only when it is itself a checkpoint folder (``checkpoint-500/`` passed directly): a run named
    ``sweep_steps1000`` must not give its step to every file."""
    for folder in path.parents:
        if folder == root and not _is_model_dir(root):
            break
        step = step_from_name(folder.name, tagged_only=True)
        if step is not None:
            return step
        if folder == root:
            break
    return None


def _csv_has_step(path: Path) -> bool:
    """Whether a CSV's header names a step column (unreadable headers count, so the reader can warn)."""
    if path.name.lower() == "metrics.csv":
        return True
    try:
        with open(path, encoding="utf-8") as fh:
            header = fh.readline()
    except (OSError, UnicodeDecodeError):
        return True
    columns = {c.strip().strip('"').strip("'").lower() for c in header.split(",")}
    return any(c in columns for c in _STEP_COLUMNS)


def _classify(files: list[Path], model_dirs: list[Path], root: Path, on_error: str):
    """Checkpoint candidates, metric files, the names of everything else seen, and the number of
    would-be checkpoints skipped (with on_error='skip')."""
    candidates: list[_Candidate] = []
    skipped = 0
    metric_files: list[Path] = []
    others: list[Path] = []
    consumed: set[Path] = set()

    for path in files:  # sharded sets first, so their shards are not read as checkpoints
        if path.name.lower().endswith(INDEX_SUFFIXES):
            try:
                consumed.update(p.absolute() for p in index_shards(path))
            except CheckpointError as exc:
                _problem(on_error, exc)
                consumed.add(path.absolute())
                skipped += 1
                continue
            candidates.append(_Candidate(path, "safetensors_sharded"))
            consumed.add(path.absolute())

    for path in files:
        if path.absolute() in consumed:
            continue
        name = path.name.lower()
        if name.endswith(".csv"):
            (metric_files if _csv_has_step(path) else others).append(path)
            continue
        if name.endswith(".jsonl"):
            metric_files.append(path)
            continue
        if name == HF_TRAINER_STATE and path.parent == root:
            metric_files.append(path)
            continue
        fmt = format_of(path)
        if fmt is None or _NOT_WEIGHTS_RE.match(path.name):
            others.append(path)
            continue
        if _SHARD_RE.search(_stem(path.name)):
            _problem(
                on_error,
                CheckpointError(
                    path,
                    "is one shard of a sharded checkpoint, but no *.index.json beside it lists it",
                    "Keep the index file (e.g. model.safetensors.index.json) that was saved with the shards",
                ),
            )
            skipped += 1
            continue
        try:
            kind = sniff(path)
        except CheckpointError as exc:  # unreadable (permissions, I/O error)
            _problem(on_error, exc)
            skipped += 1
            continue
        if kind == "unknown" and name.endswith(".bin"):
            others.append(path)  # .bin is also a raw data suffix (nanoGPT's train.bin)
            continue
        if kind in ("empty", "lfs", "unknown"):
            problem = {
                "empty": ("is empty (0 bytes)", "Save the checkpoint again, or delete the file"),
                "lfs": ("is a Git LFS pointer, not the checkpoint itself", "Fetch the real file with `git lfs pull`"),
                "unknown": (
                    "is neither a torch.save file nor a safetensors file",
                    "Check that this is a checkpoint, or move it out of the run folder",
                ),
            }[kind]
            _problem(on_error, CheckpointError(path, *problem))
            skipped += 1
            continue
        candidates.append(_Candidate(path, fmt))

    candidates.extend(_Candidate(folder, "hf_dir") for folder in model_dirs)
    return candidates, metric_files, others, skipped


def _resolve_steps(candidates: list[_Candidate], root: Path, on_error: str) -> list[_Candidate]:
    """Give every candidate a step (name, folder, stored key, trainer_state.json); drop those without."""
    unresolved: list[_Candidate] = []
    for cand in candidates:
        cand.step = step_from_name(cand.path.name)
        if cand.step is None:
            cand.step = _folder_step(cand.path, root)
        if cand.step is None:
            cand.alias = bool(_ALIAS_RE.match(_stem(cand.path.name)))
            try:
                cand.step = read_step_key(cand.path)
            except CheckpointError as exc:
                _problem(on_error, exc)
                continue
            if cand.step is None and cand.path.name in HF_MODEL_FILES:
                state_file = cand.path.parent / HF_TRAINER_STATE
                cand.step = trainer_state_step(state_file) if state_file.is_file() else None
        if cand.step is None:
            unresolved.append(cand)
    resolved = [c for c in candidates if c.step is not None]

    for cand in unresolved:
        if cand.alias and resolved:
            warnings.warn(
                f"{cand.path}: no step in its name or inside it; skipped, since the run has other "
                f"checkpoints with steps. {_FIX_NAME} to include it",
                UserWarning,
                stacklevel=3,
            )
        else:
            _problem(on_error, CheckpointError(cand.path, "has no step in its name or inside it", _FIX_NAME))
    return resolved


def _dedupe(candidates: list[_Candidate], on_error: str) -> list[_Candidate]:
    """One checkpoint per step: aliases (last.ckpt) that repeat a named step are dropped; true duplicates
    are an error, or with on_error='skip' the first in natural order is kept."""
    by_step: dict[int, list[_Candidate]] = {}
    for cand in sorted(candidates, key=lambda c: natural_key(c.path.as_posix())):
        by_step.setdefault(cand.step, []).append(cand)
    kept = []
    for step, group in sorted(by_step.items()):
        if len(group) > 1:
            named = [c for c in group if not c.alias]
            aliases = [c for c in group if c.alias]
            if named and aliases:
                warnings.warn(
                    f"{', '.join(str(c.path) for c in aliases)}: same step {step} as {named[0].path}; "
                    "treated as a copy of it and skipped",
                    UserWarning,
                    stacklevel=3,
                )
                group = named
            if len(group) > 1:
                first, *rest = group
                listing = " and ".join(str(c.path) for c in group)
                error = CheckpointError(
                    first.path,
                    f"has step {step}, and so do {', '.join(str(c.path) for c in rest)} ({listing})",
                    "Keep one file per step: remove or rename the copies, or pass each run's folder "
                    "separately if these are different runs (on_error='skip' keeps the first)",
                )
                _problem(on_error, error, skipped=f"kept {first.path.name}, skipped the others")
                group = [first]
        kept.append(group[0])
    return kept


def _trainer_state_file(root: Path, checkpoints: list[CheckpointRef]) -> Path | None:
    """The run folder's trainer_state.json, else the newest checkpoint-N/ folder's."""
    if (root / HF_TRAINER_STATE).is_file():
        return None  # already a metric file from the scan
    for ref in reversed(checkpoints):
        if ref.fmt == "hf_dir" and (ref.path / HF_TRAINER_STATE).is_file():
            return ref.path / HF_TRAINER_STATE
    return None


def _listing(paths: list[Path], root: Path, limit: int = 10) -> str:
    names = [p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p) for p in paths]
    if not names:
        return "nothing"
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def discover_run(path, *, name: str | None = None, on_error: str = "raise") -> RunSource:
    """Find the checkpoints and metric logs of one run.

    ``path`` is the run folder (or one checkpoint file / ``checkpoint-N/`` folder). ``name`` defaults
    to the folder's name (a file's stem). ``on_error='raise'`` stops at the first checkpoint without
    a step, unreadable step key, duplicate step, empty or unrecognised file; ``'skip'`` warns and
    leaves it out. A missing path, an empty folder, or one with no checkpoint at all always raises.
    """
    _check_on_error(on_error)
    given = Path(path).expanduser().absolute()
    if not given.exists():
        raise CheckpointError(given, "does not exist", "Check the path; a run is a folder of checkpoint files")
    if is_hub_cache(given):
        return _discover_hub_cache(given, name=name, on_error=on_error)

    if given.is_file():
        root = given.parent
        files, model_dirs = [given], []
        run_name = name or given.stem
    else:
        root = given
        try:
            visible = [p for p in root.iterdir() if not p.name.startswith(".")]
        except OSError as exc:
            raise CheckpointError(root, f"cannot be listed ({exc.strerror})", "Check its permissions") from exc
        if not visible:
            raise CheckpointError(
                root, "is an empty folder", "Point sedviz at the folder that holds the run's checkpoint files"
            )
        files, model_dirs = _scan(root)
        run_name = name or root.name

    candidates, metric_files, others, skipped = _classify(files, model_dirs, root, on_error)
    if not candidates and skipped:
        raise CheckpointError(
            given,
            f"has {skipped} checkpoint file(s) but none could be used (see the warnings above)",
            "Fix or replace the files named in the warnings",
        )
    if not candidates:
        what = (
            "is not a checkpoint sedviz reads"
            if given.is_file()
            else f"holds no checkpoint sedviz recognises (found: {_listing(others + metric_files, root)})"
        )
        raise CheckpointError(
            given,
            what,
            "sedviz reads *.pt, *.pth, *.bin, *.ckpt and *.safetensors files, sharded sets with a "
            "*.index.json, and checkpoint-N/ folders; pass the folder that holds them",
        )

    resolved = _dedupe(_resolve_steps(candidates, root, on_error), on_error)
    if not resolved:
        raise CheckpointError(
            given,
            f"has {len(candidates)} checkpoint file(s) but none could be used (see the warnings above)",
            f"Fix the files named in the warnings. {_FIX_NAME}",
        )
    checkpoints = [CheckpointRef(path=c.path, step=int(c.step), fmt=c.fmt) for c in resolved]
    extra = _trainer_state_file(root, checkpoints)
    if extra is not None:
        metric_files.append(extra)
    return RunSource(name=str(run_name), root=root, checkpoints=checkpoints, metric_files=metric_files,
                     model_config=_model_config(root, checkpoints))


def _model_config(root: Path, checkpoints: list[CheckpointRef]) -> ModelConfig | None:
    """The ``config.json`` beside the newest checkpoint that has one, else in the run folder."""
    for ref in reversed(checkpoints):
        folder = ref.path if ref.path.is_dir() else ref.path.parent
        if (folder / CONFIG_FILE).is_file():
            return read_model_config(folder / CONFIG_FILE)
    return read_model_config(root / CONFIG_FILE)


def is_hub_cache(path: Path) -> bool:
    """A Hugging Face hub cache folder of one model: ``refs/`` and ``snapshots/`` inside."""
    return path.is_dir() and (path / "refs").is_dir() and (path / "snapshots").is_dir()


def _discover_hub_cache(root: Path, *, name: str | None, on_error: str) -> RunSource:
    """One model's hub cache: ``refs/<revision>`` -> ``snapshots/<hash>/``, steps from revision names."""
    by_snapshot: dict[Path, list[tuple[str, int | None]]] = {}
    for ref in sorted((root / "refs").iterdir(), key=lambda p: natural_key(p.name)):
        if not ref.is_file():
            continue  # refs/pr/N: pull-request heads, not revisions of the model
        try:
            commit = ref.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            _problem(on_error, CheckpointError(ref, f"cannot be read ({exc})", "Download the revision again"))
            continue
        snapshot = root / "snapshots" / commit
        if not (commit and _is_model_dir(snapshot)):
            _problem(
                on_error,
                CheckpointError(
                    ref,
                    f"points to snapshot {commit!r}, which holds none of {', '.join(HF_MODEL_FILES)}",
                    "Download the revision's weights again (from_pretrained(..., revision=...)), or delete the ref",
                ),
            )
            continue
        by_snapshot.setdefault(snapshot, []).append((ref.name, step_from_name(ref.name, tagged_only=True)))
    found: dict[int, CheckpointRef] = {}
    unstepped = []
    for snapshot, revisions in by_snapshot.items():
        steps = sorted({s for _, s in revisions if s is not None})
        if not steps:
            unstepped.append(f"{revisions[0][0]} ({snapshot.name[:12]})")
            continue
        for step in steps:
            if step in found:
                _problem(on_error, CheckpointError(snapshot, f"has step {step}, and so does {found[step].path}",
                                                   "Keep one revision per step"))
                continue
            found[step] = CheckpointRef(path=snapshot, step=step, fmt="hf_dir")
    if unstepped:
        what = f"revision(s) {', '.join(unstepped)} carry no step in their name"
        if not found:
            raise CheckpointError(root, f"is a hub cache whose {what}",
                                  "Download revisions named by step (from_pretrained(..., revision='step1000'))")
        warnings.warn(f"{root}: {what}; skipped", UserWarning, stacklevel=3)
    if not found:
        raise CheckpointError(root, "is a hub cache with no downloaded revision",
                              "Download revisions with from_pretrained(..., revision='step1000')")
    checkpoints = [found[s] for s in sorted(found)]
    run_name = name or _hub_repo_name(root)
    return RunSource(name=run_name, root=root, checkpoints=checkpoints, metric_files=[],
                     model_config=_model_config(root, checkpoints))


def _hub_repo_name(root: Path) -> str:
    """``models--EleutherAI--pythia-70m`` -> ``EleutherAI/pythia-70m``."""
    parts = root.name.split("--")
    return "/".join(parts[1:]) if len(parts) >= 3 and parts[0] in ("models", "datasets", "spaces") else root.name


def discover_runs(paths, *, names=None, on_error: str = "raise") -> list[RunSource]:
    """Discover several runs. Names default to folder names; repeated names get the parent folder
    prepended (``seed1/run``), then ``_2``, ``_3``, with a warning. Explicit ``names`` must be unique."""
    _check_on_error(on_error)
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise SedvizError("discover_runs: no run folders given; pass a list of run folder paths")
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != len(paths):
            raise SedvizError(
                f"discover_runs: {len(names)} names for {len(paths)} paths; pass one name per run folder"
            )
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise SedvizError(f"discover_runs: names {repeated} are repeated; give every run a different name")
    runs = [
        discover_run(p, name=(names[i] if names is not None else None), on_error=on_error)
        for i, p in enumerate(paths)
    ]
    if names is None:
        _make_unique(runs)
    return runs


def _make_unique(runs: list[RunSource]) -> None:
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.name] = counts.get(run.name, 0) + 1
    renamed = []
    taken = {run.name for run in runs if counts[run.name] == 1}
    for run in runs:
        if counts[run.name] == 1:
            continue
        old = run.name
        parent = run.root.parent.name if run.root.name == old else run.root.name
        new = f"{parent}/{old}" if parent else old
        k = 2
        candidate = new
        while candidate in taken:
            candidate = f"{new}_{k}"
            k += 1
        run.name = candidate
        taken.add(candidate)
        renamed.append(f"{old!r} ({run.root}) -> {candidate!r}")
    if renamed:
        warnings.warn(
            "run names must be unique; renamed " + "; ".join(renamed) + ". Pass names=[...] to choose them",
            UserWarning,
            stacklevel=3,
        )
