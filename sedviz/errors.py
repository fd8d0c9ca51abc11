"""Errors sedviz raises at its public boundary.

Every message names the file or parameter that was wrong and what to do about it.
"""


class SedvizError(ValueError):
    """Bad input to sedviz: a file, a folder or a parameter. The message says how to fix it."""


class CheckpointError(SedvizError):
    """A checkpoint file that cannot be read safely (truncated, not a state dict, unsafe pickle, ...)."""

    def __init__(self, path, problem, fix):
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{path}: {problem}. {fix}")


class StoreError(SedvizError):
    """A store that cannot be opened or extended (wrong schema, options that do not match, ...)."""


class StoreLockedError(StoreError):
    """Another process holds the store's writer lock; ``holder`` describes it (pid, host, start time, command)."""

    def __init__(self, message, holder: str = ""):
        self.holder = holder
        super().__init__(message)
