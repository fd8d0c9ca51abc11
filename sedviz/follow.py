"""Watching a store that is being written (a live :class:`sedviz.Recorder`, or ``sedviz compute``).

    from sedviz.follow import Follow
    from sedviz.widgets import sv_explorer
    Follow("spectra.zarr", sv_explorer, auto_refresh=10)      # in a notebook cell

A reader never takes the writer lock: it sees the store's last commit. :func:`committed` and
:func:`changed` say whether a store has moved on since it was read; :class:`Follow` shows an explorer of the
store with a *Refresh* button (and, with ``auto_refresh=seconds``, refreshes itself on a timer),
rebuilding the explorer on the newer Dataset and keeping the controls' values that are still valid.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

import xarray as xr

from .errors import StoreError


def _open(store) -> xr.Dataset:
    from . import open as sedviz_open

    return sedviz_open(store)


def committed(store) -> dict[str, int]:
    """Committed records per run of a store (empty while nothing is committed); cheap to call
    often: it reads the commit files only."""
    from .io.store import open_store

    return {name: int(info.get("n", 0)) for name, info in open_store(store).runs().items()}


def changed(store, seen: dict[str, int]) -> bool:
    """True when the store's committed records per run (:func:`committed`) differ from ``seen``."""
    return committed(store) != seen


class Follow:
    """An explorer of a store being written, with a Refresh button and an optional timer.

    Parameters
    ----------
    store : the store's path.
    explorer : a ``*_explorer`` function of :mod:`sedviz.widgets` (``ds, **kwargs -> Explorer``).
    auto_refresh : seconds between automatic refreshes (None: only on the button / :meth:`refresh`).
    **kwargs : passed to ``explorer`` on every rebuild.

    Attributes: ``ds`` (the Dataset shown), ``explorer`` (the current Explorer), ``widget`` (the
    ipywidgets box to display; a Follow displays itself in a notebook), ``refreshes`` (count).
    """

    def __init__(self, store, explorer: Callable, *, auto_refresh: float | None = None, **kwargs):
        import ipywidgets as ipw

        if auto_refresh is not None and not auto_refresh > 0:
            raise StoreError(f"auto_refresh={auto_refresh!r}: give the seconds between refreshes (> 0), or None")
        self.store, self._factory, self._kwargs = store, explorer, kwargs
        self._seen = committed(store)  # read before the data: a commit in between refreshes once more later
        self.ds = _open(store)
        self.explorer = explorer(self.ds, **kwargs)
        self.refreshes = 0
        self.button = ipw.Button(description="Refresh", icon="refresh")
        self.button.on_click(lambda _: self.refresh())
        self.label = ipw.HTML(self._describe())
        self.widget = ipw.VBox([ipw.HBox([self.button, self.label]), self.explorer])
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        if auto_refresh is not None:
            self._thread = threading.Thread(target=self._loop, args=(float(auto_refresh),), daemon=True,
                                            name="sedviz-follow")
            self._thread.start()

    def _describe(self) -> str:
        steps = self.ds.step.values
        last = int(steps[-1]) if len(steps) else None
        return f"&nbsp;{len(steps)} steps, last {last} (read {time.strftime('%H:%M:%S')})"

    def refresh(self) -> bool:
        """Reopen the store; when it has new records, rebuild the explorer on them, keeping the
        controls' values that still apply. Returns True when the view changed."""
        with self._lock:
            if not changed(self.store, self._seen):
                self.label.value = self._describe()
                return False
            self._seen = committed(self.store)
            ds = _open(self.store)
            old = self.explorer.selection
            explorer = self._factory(ds, **self._kwargs)
            for name, value in old.items():
                control = explorer.controls.get(name)
                if control is None or name == "steps":  # the step range follows the new steps
                    continue
                try:
                    control.value = value
                except Exception:  # no longer a valid choice: keep the new default
                    pass
            self.ds, self.explorer = ds, explorer
            self.widget.children = [self.widget.children[0], explorer]
            self.refreshes += 1
            self.label.value = self._describe()
            return True

    def _loop(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            try:
                self.refresh()
            except Exception as exc:  # a store replaced mid-read: show it, try again next time
                self.label.value = f"&nbsp;<span style='color:#b00'>{type(exc).__name__}: {exc}</span>"

    def stop(self) -> None:
        """Stop the timer (the view stays)."""
        self._stop.set()

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
