"""Streaming readers that turn malformed input into errors naming the file and line; an atomic writer."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from visrl_bench.core.errors import DataError


def require_file(path: str | Path, what: str = "file") -> Path:
    p = Path(path)
    if not p.is_file():
        hint = " (it is a directory)" if p.is_dir() else ""
        raise DataError(p, f"{what} not found{hint}")
    return p


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    p = require_file(path, what)
    try:
        with p.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise DataError(p, f"malformed JSON: {exc.msg} (column {exc.colno})", line=exc.lineno) from None
    except UnicodeDecodeError as exc:
        raise DataError(p, f"not UTF-8 text: {exc}") from None


def iter_jsonl(path: str | Path, what: str = "JSONL file") -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line; each line must be a JSON object."""
    p = require_file(path, what)
    with p.open(encoding="utf-8", errors="strict") as f:
        lineno = 0
        while True:
            try:
                line = f.readline()
            except UnicodeDecodeError as exc:
                raise DataError(p, f"not UTF-8 text: {exc}", line=lineno + 1) from None
            if not line:
                return
            lineno += 1
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    p, f"malformed JSON line: {exc.msg} (column {exc.colno})", line=lineno
                ) from None
            if not isinstance(obj, dict):
                raise DataError(p, f"expected a JSON object, got {type(obj).__name__}", line=lineno)
            yield lineno, obj


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML config file of `option: value` (option names may use - or _)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise DataError(p, "config file not found")
    try:
        values = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise DataError(
            p, f"malformed YAML: {getattr(exc, 'problem', exc)}", line=mark.line + 1 if mark else None
        ) from None
    if not isinstance(values, dict):
        raise DataError(p, "expected a mapping of option: value")
    return {str(k).replace("-", "_"): v for k, v in values.items()}


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write PATH so that a reader in another process sees the old file or the whole new one, never a
    half-written one (a file marking a finished step is polled while it is written)."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)


def finite(obj: Any) -> Any:
    """OBJ with every NaN or infinite float replaced by None. Python's json writes them as bare NaN /
    Infinity, which is not JSON: jq, pandas' strict readers and other languages reject the whole file."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def json_line(obj: Any) -> str:
    """One strict-JSON line (no NaN / Infinity, non-ASCII kept) for a JSONL record file. Text that cannot
    be UTF-8 (a lone surrogate from a dataset's JSON escapes) is written \\u-escaped, not a failed write."""
    line = json.dumps(finite(obj), ensure_ascii=False, allow_nan=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(finite(obj), ensure_ascii=True, allow_nan=False)
    return line + "\n"


def json_text(obj: Any, **kwargs: Any) -> str:
    """A strict-JSON document (no NaN / Infinity) for results and summaries."""
    return json.dumps(finite(obj), ensure_ascii=False, allow_nan=False, **kwargs)
