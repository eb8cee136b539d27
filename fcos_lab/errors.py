"""Errors the user can act on: each names the file, the record and the problem."""


class FcosLabError(Exception):
    """Base class for errors that the CLI reports as a clear message (exit code 2), never a traceback."""


class ConfigError(FcosLabError, ValueError):
    """An unknown preset, an unknown override key or a value of the wrong type."""


class DataError(FcosLabError, ValueError):
    """A malformed annotation file, an unreadable image or a box that cannot be used."""


class InputError(FcosLabError, ValueError):
    """A tensor handed to the library has the wrong shape, dtype or non-finite values."""


class CheckpointError(FcosLabError, ValueError):
    """A checkpoint or weights file that is missing, corrupt, unsafe or from another model."""
