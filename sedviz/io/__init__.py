"""Discovering runs, reading checkpoints safely, and reading metric logs (DESIGN "Checkpoints it must read").

The names below load on first use: reading a store (``sedviz.open``) needs no torch.
"""
import importlib

_LAZY = {
    "read_state": "sedviz.io.checkpoints",
    "read_step_key": "sedviz.io.checkpoints",
    "CheckpointRef": "sedviz.io.discover",
    "RunSource": "sedviz.io.discover",
    "discover_run": "sedviz.io.discover",
    "discover_runs": "sedviz.io.discover",
    "read_metrics": "sedviz.io.metrics",
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'sedviz.io' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "CheckpointRef",
    "RunSource",
    "discover_run",
    "discover_runs",
    "read_state",
    "read_step_key",
    "read_metrics",
]
