"""Errors that name the file and line a user has to fix."""

from __future__ import annotations

from pathlib import Path


class VisrlError(Exception):
    """Base class for errors the CLI reports as one clear line instead of a traceback."""


class DataError(VisrlError):
    """Bad or missing input data, located by file and (where it has one) line or row."""

    def __init__(self, path: str | Path, message: str, line: int | None = None, row: object | None = None):
        self.path = str(path)
        self.line = line
        self.row = row
        self.message = message
        where = self.path
        if line is not None:
            where += f":{line}"
        if row is not None:
            where += f" (row {row})"
        super().__init__(f"{where}: {message}")


class UnknownNameError(VisrlError, KeyError):
    """A registry name that does not exist; the message suggests the closest ones."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])
