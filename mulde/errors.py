"""User-facing errors: one clear line that names the file or value and the fix.

The CLI prints ``error: <message>`` for any :class:`MuldeError` and exits with status 2,
never a traceback. Library callers can catch the standard base classes as well.
"""

from __future__ import annotations


class MuldeError(Exception):
    """Base class for errors whose message is meant for the user as is."""


class InputError(MuldeError, ValueError):
    """Bad data or arguments: wrong dimension, NaN, empty input, unknown name, label mismatch."""


class VideoError(MuldeError, OSError):
    """A video or frame folder that is missing, unreadable or empty."""


class DatasetError(MuldeError, ValueError):
    """A dataset root whose layout or annotations do not match what the reader expects."""


class WeightsError(MuldeError, RuntimeError):
    """Pretrained weights that are missing offline; the message says how to provide them."""


class ModelFileError(MuldeError, ValueError):
    """A saved model that is corrupt, from an incompatible version or for other features."""
