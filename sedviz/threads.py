"""How many CPU threads sedviz's compute uses (torch's intra-op pool and the BLAS libraries).

The rule, in order: an explicit ``threads=`` (``sedviz compute --threads N``); else
``OMP_NUM_THREADS`` when it is set (torch already follows it, sedviz leaves it alone); else
:data:`DEFAULT`. Measured on the demo compute (docs/cli.md, "Threads"): on a 2-core machine that
other processes share, torch's own default of one OpenMP thread per core made the pass 5-13x
slower in wall time and 5-11x in CPU time than one thread, because an OpenMP barrier spins while
it waits for a thread the kernel has descheduled. Parallelism across checkpoints comes from processes
(Dask workers), not from threads inside one decomposition.
"""
from __future__ import annotations

import contextlib
import os

from .errors import SedvizError

DEFAULT = 1
_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def resolve_threads(threads: int | None = None) -> int | None:
    """The thread count to use: ``threads`` if given, None when ``OMP_NUM_THREADS`` is set (leave
    it to the environment), else :data:`DEFAULT`."""
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise SedvizError(f"threads={threads!r}: give a whole number >= 1 (or None for the default)")
        return threads
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    return DEFAULT


def pin_environment(threads: int | None = None) -> None:
    """Before torch or numpy are imported (the command line): set the BLAS/OpenMP thread variables
    that are not set yet, so numpy's BLAS does not start a pool beside torch's."""
    n = resolve_threads(threads)
    if n is None:
        return
    for name in _ENV:
        if threads is not None or not os.environ.get(name):
            os.environ[name] = str(n)


@contextlib.contextmanager
def using_threads(threads: int | None = None):
    """Within the block, torch uses the thread count of the rule above; the previous count is
    restored afterwards. :func:`sedviz.compute` runs inside it with its ``threads=`` argument."""
    import torch

    n = resolve_threads(threads)
    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
