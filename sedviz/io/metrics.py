"""Metric logs beside the checkpoints -> one table indexed by optimizer step.

Reads CSV files with a ``step`` (or ``global_step``) column (Lightning's CSVLogger
``metrics.csv`` included), JSON-lines files whose records carry a step, and Hugging Face
``trainer_state.json`` (its ``log_history``). Names are normalized so that every run speaks the
schema's words (docs/schema.md): ``train_loss``, ``val_loss``, ``train_acc``, ``val_acc``; other
numeric columns are kept with ``/`` replaced by ``_``.
"""
from __future__ import annotations

import json
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from sedviz.errors import SedvizError

ON_ERROR = ("raise", "skip")
STEP_COLUMNS = ("step", "global_step", "trainer/global_step")

_ALIASES = {
    "train_loss": ("loss", "train/loss", "train_loss", "training_loss", "training/loss"),
    "val_loss": (
        "eval_loss", "eval/loss", "val/loss", "val_loss", "validation_loss", "validation/loss",
        "valid_loss", "valid/loss",
    ),
    "val_acc": (
        "eval_accuracy", "eval/accuracy", "eval_acc", "eval/acc", "val/acc", "val_acc", "val_accuracy",
        "val/accuracy", "validation_accuracy", "validation/accuracy", "validation_acc", "valid_acc", "valid/acc",
    ),
    "train_acc": ("train/acc", "train_acc", "train_accuracy", "train/accuracy", "training_accuracy"),
}
# One-off numbers about the whole run (Hugging Face's end-of-training summary, timings and
# throughputs), not curves over training: kept out of the (run, step) variables.
_SUMMARY_RE = re.compile(r"^(total_flos|.*_runtime|.*_per_second)$")
_CANONICAL = {alias: canonical for canonical, aliases in _ALIASES.items() for alias in aliases}
_FIX = "Fix or delete the file, or move it out of the run folder"


class _BadLog(Exception):
    """A log that cannot be used; carries (problem, fix) for the message."""

    def __init__(self, problem: str, fix: str = _FIX):
        super().__init__(problem)
        self.problem = problem
        self.fix = fix


def metric_name(name: str) -> str:
    """The sedviz name of a logged metric: ``loss`` -> ``train_loss``, ``eval_loss`` -> ``val_loss``,
    ``val/acc`` -> ``val_acc``, ...; anything else keeps its name with ``/`` replaced by ``_``."""
    text = str(name).strip()
    return _CANONICAL.get(text.lower(), text.replace("/", "_"))


def _numeric(value) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _flatten(record: Mapping, prefix: str = "") -> dict:
    flat = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "/"))
        else:
            flat[name] = value
    return flat


def _records_frame(records: list[dict], path: Path) -> pd.DataFrame:
    """Records (already holding a 'step' entry) -> frame of step + float columns, names normalized."""
    frame = pd.DataFrame.from_records(records)
    return _tidy(frame, "step", path)


def _tidy(frame: pd.DataFrame, step_col: str, path: Path) -> pd.DataFrame:
    steps = pd.to_numeric(frame[step_col], errors="coerce")
    keep = steps.notna() & np.isfinite(steps.to_numpy(dtype=float, na_value=np.nan))
    if (steps.notna() & ~keep).any():
        warnings.warn(f"{path}: {int((steps.notna() & ~keep).sum())} row(s) with an infinite {step_col!r} left out",
                      UserWarning, stacklevel=4)
    steps = steps[keep]
    if len(steps) and not np.all(np.mod(steps.to_numpy(dtype=float), 1) == 0):
        raise _BadLog(f"has non-integer values in its {step_col!r} column")
    columns: dict[str, pd.Series] = {}
    for col in frame.columns:
        if col in STEP_COLUMNS or str(col).startswith("Unnamed:"):
            continue
        series = frame.loc[keep, col]
        if series.dtype == bool:
            series = series.astype(float)
        elif not pd.api.types.is_numeric_dtype(series):
            coerced = pd.to_numeric(series, errors="coerce")
            if coerced.notna().sum() == 0:
                continue  # a text column (a phase name, a timestamp): not a metric
            bad = int((series.notna() & coerced.isna()).sum())
            if bad:
                warnings.warn(
                    f"{path}: {bad} value(s) in column {col!r} are not numbers; read as NaN",
                    UserWarning,
                    stacklevel=4,
                )
            series = coerced
        name = metric_name(col)
        series = series.astype("float64")
        # Two logged names for one metric (loss and train/loss): later columns win where they have values.
        columns[name] = series.combine_first(columns[name]) if name in columns else series
    out = pd.DataFrame(columns, index=steps.index)
    out.insert(0, "step", steps.astype("int64"))
    return out


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError as exc:
        raise _BadLog("is empty") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
        raise _BadLog(f"is not a readable CSV ({str(exc).strip().splitlines()[0]})") from exc
    lower = {str(c).strip().lower(): c for c in frame.columns}
    step_col = next((lower[c] for c in STEP_COLUMNS if c in lower), None)
    if step_col is None:
        raise _BadLog(
            f"has no step column (columns: {', '.join(map(str, frame.columns[:8]))})",
            "Log the optimizer step in a 'step' or 'global_step' column, or move the file out of the run folder",
        )
    frame = frame.rename(columns={step_col: "step"})
    return _tidy(frame, "step", path)


def _step_of(record: Mapping):
    for key in STEP_COLUMNS:
        if key in record:
            value = record[key]
            return value if _numeric(value) is not None and not isinstance(value, bool) else None
    return None


def _read_jsonl(path: Path, on_error: str) -> pd.DataFrame:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _BadLog(f"is not readable UTF-8 text ({exc})") from exc
    records, bad_lines = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad_lines.append(number)
            continue
        if not isinstance(record, Mapping):
            bad_lines.append(number)
            continue
        record = _flatten(record)
        step = _step_of(record)
        if step is None:
            continue  # a header or config line: not a metric row
        row = {k: _numeric(v) for k, v in record.items() if k not in STEP_COLUMNS and _numeric(v) is not None}
        row["step"] = step
        records.append(row)
    if bad_lines and (on_error == "raise" or not records):
        shown = ", ".join(map(str, bad_lines[:5])) + (" ..." if len(bad_lines) > 5 else "")
        raise _BadLog(f"has {len(bad_lines)} line(s) that are not JSON objects (line {shown})")
    if bad_lines:
        warnings.warn(
            f"{path}: skipped {len(bad_lines)} line(s) that are not JSON objects (line "
            f"{', '.join(map(str, bad_lines[:5]))}); kept the other {len(records)} rows",
            UserWarning,
            stacklevel=3,
        )
    if not records:
        raise _BadLog(
            "has no records with a 'step' or 'global_step' key",
            "Log the optimizer step with every record, or move the file out of the run folder",
        )
    return _records_frame(records, path)


def _read_trainer_state(path: Path) -> pd.DataFrame:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _BadLog(f"is not readable JSON ({exc})") from exc
    history = data.get("log_history") if isinstance(data, Mapping) else None
    if not isinstance(history, list):
        raise _BadLog("has no 'log_history' list (is it a Hugging Face trainer_state.json?)")
    records = []
    for entry in history:
        if not isinstance(entry, Mapping) or _step_of(entry) is None:
            continue
        entry = dict(entry)
        if "train_runtime" in entry:
            # The end-of-training summary: its train_loss is the mean over all of training, not the
            # loss at that step, so it must not overwrite the step's own logged loss.
            entry.pop("train_loss", None)
        row = {k: _numeric(v) for k, v in entry.items() if k not in STEP_COLUMNS and _numeric(v) is not None}
        row["step"] = _step_of(entry)
        records.append(row)
    if not records:
        return pd.DataFrame({"step": pd.Series([], dtype="int64")})
    return _records_frame(records, path)


def read_metric_file(path, *, on_error: str = "raise") -> pd.DataFrame:
    """One log file -> long frame with an int64 ``step`` column and float64 metric columns."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".csv"):
        return _read_csv(path)
    if name.endswith(".jsonl"):
        return _read_jsonl(path, on_error)
    if name.endswith(".json"):
        return _read_trainer_state(path)
    raise _BadLog("is not a metric log sedviz reads (CSV, JSON lines or trainer_state.json)")


def read_metrics(run, *, on_error: str = "skip") -> pd.DataFrame:
    """The run's logged metrics, one row per step.

    Index ``step`` (int64, unique, ascending); float64 columns with sedviz names (``train_loss``,
    ``val_loss``, ``val_acc``, ...). Rows logged at the same step by different files or lines
    (train and eval rows) are merged; where several give a value, the last one read wins (files in
    ``run.metric_files`` order, rows in file order). An unreadable log is skipped with a warning
    naming it (``on_error='skip'``) or raises :class:`~sedviz.errors.SedvizError` (``'raise'``).
    """
    if on_error not in ON_ERROR:
        raise SedvizError(f"on_error={on_error!r} is not one of {ON_ERROR}: pass 'raise' or 'skip'")
    frames = []
    for path in getattr(run, "metric_files", []):
        try:
            frames.append(read_metric_file(path, on_error=on_error))
        except _BadLog as exc:
            message = f"{path}: {exc.problem}. {exc.fix}"
            if on_error == "raise":
                raise SedvizError(message) from exc
            warnings.warn(f"{message} (skipped)", UserWarning, stacklevel=2)
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(index=pd.Index([], dtype="int64", name="step"))
    merged = pd.concat(frames, ignore_index=True, sort=False)
    table = merged.groupby("step", sort=True).last()  # last non-NaN value per column
    table.index = table.index.astype("int64")
    table.index.name = "step"
    table = table.astype("float64")
    return table.dropna(axis=1, how="all")


def is_summary(name: str) -> bool:
    """A one-off number about the run (``train_runtime``, ``total_flos``, ``*_per_second``, ...)."""
    return bool(_SUMMARY_RE.match(str(name)))


def split_summary(table: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, float]]:
    """(curves, summary): the table without its summary columns, and each summary column's last
    logged value (``train_runtime`` is logged once, at the end; ``eval_runtime`` at every eval,
    of which the last is kept). The Dataset keeps the summary in its ``summary`` attr."""
    names = [c for c in table.columns if is_summary(c)]
    summary = {}
    for c in names:
        values = table[c].dropna()
        if len(values):
            summary[str(c)] = float(values.iloc[-1])
    return table.drop(columns=names), summary
