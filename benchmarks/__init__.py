"""sedviz benchmarks: `python -m benchmarks.run` (see README.md)."""
