"""Exceptions that the command line turns into one-line messages and exit codes."""

from __future__ import annotations

__all__ = ["BigdeconError", "BigdeconNotice", "BigdeconWarning", "InputError", "ProcessingError"]


class BigdeconError(Exception):
    """Base class of every error bigdecon raises on purpose."""

    exit_code = 1


class InputError(BigdeconError, ValueError):
    """Bad input or parameters: a missing path, non-OME data, NaNs, wrong axes... (exit 2)."""

    exit_code = 2


class ProcessingError(BigdeconError, RuntimeError):
    """A failure while processing valid input (exit 1)."""

    exit_code = 1


class BigdeconNotice(UserWarning):
    """Something bigdecon decided about the input that the user should know (the CLI prints it once)."""


class BigdeconWarning(BigdeconNotice):
    """Something went wrong that costs space or time, not the result (the CLI prints it as a warning)."""
