"""Discovering runs, reading checkpoints safely, and reading metric logs (DESIGN "Checkpoints it must read")."""
from sedviz.io.checkpoints import read_state, read_step_key
from sedviz.io.discover import CheckpointRef, RunSource, discover_run, discover_runs
from sedviz.io.metrics import read_metrics

__all__ = [
    "CheckpointRef",
    "RunSource",
    "discover_run",
    "discover_runs",
    "read_state",
    "read_step_key",
    "read_metrics",
]
