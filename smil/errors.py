"""Errors a user sees when input is wrong.

Every error raised for bad input is a :class:`SmilError`. The CLI prints its message on one line and
exits non-zero; no traceback is printed unless ``--debug`` is given.
"""

from __future__ import annotations

from pathlib import Path


class SmilError(Exception):
    """An error caused by the user's input or environment, with a message meant for them."""

    def __init__(self, message: str, *, path: str | Path | None = None, field: str | None = None):
        self.path = None if path is None else str(path)
        self.field = field
        self.detail = message
        parts = []
        if self.path is not None:
            parts.append(self.path)
        if field is not None:
            parts.append(f"field '{field}'")
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)

    def __reduce__(self) -> tuple:
        # pickled as it is (worker processes send errors to their parent): the default would call
        # ``cls(message)`` and lose ``path`` and ``field``, or fail for a subclass's own signature
        return _restore, (type(self), self.args, self.__dict__)


def _restore(cls: type, args: tuple, state: dict) -> "SmilError":
    exc = cls.__new__(cls, *args)
    Exception.__init__(exc, *args)
    exc.__dict__.update(state)
    return exc


class ModelFileError(SmilError):
    """A body model file is unreadable, unsafe or inconsistent."""


class UnsafePickleError(ModelFileError):
    """A pickle tried to reconstruct something other than arrays and plain containers."""


class ShapeMismatchError(SmilError):
    """An input's shape does not match what the body model or camera rig expects."""


class ConfigError(SmilError):
    """A configuration file or value is invalid."""


class DataError(SmilError):
    """An input data file (images, annotations, calibration, dataset) is invalid."""


class NotBuiltError(SmilError):
    """A feature that is planned but not implemented yet."""
