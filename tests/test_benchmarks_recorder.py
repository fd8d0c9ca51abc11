"""The recorder benchmark in quick mode: both rows, positive finite ratios (nothing timed is asserted)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_recorder_benchmark_quick(tmp_path):
    out = tmp_path / "rec.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.recorder", "--quick", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["id"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"12", "13"}
    for r in rows.values():
        assert math.isfinite(r["ratio"]) and r["ratio"] > 0, r
    assert rows["13"]["raw"]["record_s"] and rows["13"]["raw"]["step_s"] > 0
