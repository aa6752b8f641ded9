"""Errors that name the file and line a user has to fix."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def locate(path: str | Path, line: int | None = None, row: object | None = None) -> str:
    """One numbering for every place in a data file: `file:line` for a line of a text file (1-based, as
    editors count), `file (row N)` for a record of a structured file (a parquet row, a JSON array entry)."""
    where = str(path)
    if line is not None:
        where += f":{line}"
    if row is not None:
        where += f" (row {row})"
    return where


class VisrlError(Exception):
    """Base class for errors the CLI reports as one clear line instead of a traceback."""


class DataError(VisrlError):
    """Bad or missing input data, located by file and (where it has one) line or row."""

    def __init__(self, path: str | Path, message: str, line: int | None = None, row: object | None = None):
        self.path = str(path)
        self.line = line
        self.row = row
        self.message = message
        super().__init__(f"{locate(path, line, row)}: {message}")


class UnknownNameError(VisrlError, KeyError):
    """A registry name that does not exist; the message suggests the closest ones."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class SystematicFailure(VisrlError):
    """Every sample of a batch failed the same way: a bug, a broken model or an exhausted device, not bad
    input. Raised instead of writing an error record for each of them (a resumed run would keep those)."""


def _never_isolated(exc: Exception) -> bool:
    # out of device memory fails any sample; recording it as one sample's error would lose the run
    return type(exc).__name__ in ("OutOfMemoryError", "AcceleratorError") or "CUDA error" in str(exc)


def isolate_failures(
    items: Sequence[T], run: Callable[[Sequence[T]], list[R]], on_error: Callable[[T, Exception], R]
) -> list[R]:
    """`run(items)`, one result per item in order; when it raises, the items are split in halves until
    each failing item is alone, and `on_error(item, exc)` gives that item's result. One sample that a
    processor or a model rejects (an image past an aspect-ratio limit, say) then costs its own record
    only: the rest of its batch is still run and scored, and a resumed run does not meet it again.

    What is not one sample's fault is raised, not recorded: device out-of-memory and CUDA errors, and a
    failure shared by every item of a batch of several (`SystematicFailure`, with the first exception)."""
    failures: list[Exception] = []

    def split(part: Sequence[T]) -> list[R]:
        try:
            return run(part)
        except Exception as exc:
            if _never_isolated(exc):
                raise
            if len(part) == 1:
                failures.append(exc)
                return [on_error(part[0], exc)]
            half = len(part) // 2
            return [*split(part[:half]), *split(part[half:])]

    results = split(items)
    if len(items) > 1 and len(failures) == len(items):
        first = failures[0]
        raise SystematicFailure(
            f"all {len(items)} samples of a batch failed, the first with {type(first).__name__}: {first}"
        ) from first
    return results


# (low, high), inclusive; None: unbounded on that side
Bounds = dict[str, tuple[float | None, float | None]]


def check_bounds(obj: object, bounds: Bounds) -> None:
    """Refuse a numeric option outside its range, naming it: a `--limit 0` or a negative batch size must not
    run as an empty or odd job that exits 0. An option whose value is None (unset) is not checked."""
    import dataclasses

    declared = {f.name: str(f.type) for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else {}
    for name, (low, high) in bounds.items():
        value = getattr(obj, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise VisrlError(f"option {name} takes a number, got {value!r}")
        # a count given as 2.5 would fail deep inside a run (range(), a batch size), after work was done
        kind = declared.get(name, "")
        whole = kind == "int" or kind.startswith("int |") or kind == "<class 'int'>"
        if whole and not isinstance(value, int):
            raise VisrlError(f"option {name} takes a whole number, got {value!r}")
        if value != value or value in (float("inf"), float("-inf")):
            raise VisrlError(f"option {name} must be a finite number, got {value!r}")
        if (low is not None and value < low) or (high is not None and value > high):
            if high is None:
                wanted = f"at least {low:g}"
            elif low is None:
                wanted = f"at most {high:g}"
            else:
                wanted = f"between {low:g} and {high:g}"
            raise VisrlError(f"option {name} must be {wanted}, got {value!r}")


class Bounded:
    """Base of a config dataclass whose numeric options have ranges (`BOUNDS`): they are checked whenever
    one is made, from the command line, a YAML file or code."""

    BOUNDS: ClassVar[Bounds] = {}
    # where a nested config's options sit in the configs that hold it (`judge.`): errors name them whole
    OPTION_PREFIX: ClassVar[str] = ""

    def __post_init__(self) -> None:
        try:
            check_bounds(self, self.BOUNDS)
        except VisrlError as exc:
            if not self.OPTION_PREFIX:
                raise
            raise VisrlError(str(exc).replace("option ", f"option {self.OPTION_PREFIX}", 1)) from None
