"""The one run-directory store: a run's identity checked before anything is done, records appended and
fsynced as they complete, a half-written last line cut off on resume.

`eval`, `generate` and the ablation grid keep their own identity file (run.json, config.json) and record
file, but decide "same run or not", append and read back through here, so a resumed run of any of them
behaves the same way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from visrl_bench.core.errors import DataError
from visrl_bench.core.io import json_line


def changed_keys(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The identity keys whose values differ (present in one only counts)."""
    return sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))


def read_identity(path: Path, key: str | None = "identity") -> dict[str, Any] | None:
    """The identity a previous run wrote (under `key`, or the whole file), None when there is none."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(path, f"malformed JSON: {exc.msg}", line=exc.lineno) from None
    return data.get(key, {}) if key else data


def append_records(sink: IO[str], records: Iterable[dict]) -> None:
    """Append strict-JSON lines and make them durable: a crash loses what is in flight."""
    for record in records:
        sink.write(json_line(record))
    sink.flush()
    os.fsync(sink.fileno())


def read_records(path: Path, repair: bool = False) -> list[dict]:
    """Complete lines of a record file; with repair, a half-written last line (crash mid-write) is cut off."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        if not repair:
            raise DataError(path, "last line is incomplete (interrupted run); rerun with --resume")
        with path.open("r+b") as f:
            f.truncate(end)
        data = data[:end]
    records = []
    for lineno, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(path, f"corrupt record: {exc.msg}", line=lineno) from None
    return records
