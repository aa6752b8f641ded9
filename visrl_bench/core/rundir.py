"""The one run-directory store: a run's identity checked before anything is done, records appended and
fsynced as they complete, a half-written last line cut off on resume.

`eval`, `generate` and the ablation grid keep their own identity file (run.json, config.json) and record
file, but decide "same run or not", append and read back through here, so a resumed run of any of them
behaves the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from visrl_bench.core.errors import DataError
from visrl_bench.core.io import json_line

# identity keys added after runs were written: compared only when the earlier run recorded them, so a run
# that predates the key can still be resumed (it cannot be checked on that key)
LATER_KEYS = frozenset({"weights"})
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def changed_keys(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The identity keys whose values differ (present in one only counts, but for LATER_KEYS)."""
    keys = (set(before) | set(now)) - {k for k in LATER_KEYS if k not in before}
    return sorted(k for k in keys if before.get(k) != now.get(k))


def weights_fingerprint(model_dir: str | Path) -> str:
    """Tells one set of weights at a path from another without reading gigabytes: the config, and per
    weight file its name, size and a hash of its last MiB (tensor data: any further training changes it).
    A base retrained in place must not resume runs made from the old one. "" when there is no such folder."""
    root = Path(model_dir)
    if not root.is_dir():
        return ""
    digest = hashlib.sha256()
    for path in sorted(root.iterdir()):
        if path.name == "config.json" or path.suffix in WEIGHT_SUFFIXES:
            size = path.stat().st_size
            with path.open("rb") as f:
                f.seek(max(0, size - 2**20))
                tail = f.read()
            digest.update(f"{path.name}:{size}:".encode() + hashlib.sha256(tail).digest())
    return digest.hexdigest()[:16]


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


SHARDS_DIR = "shards"


class ShardedRecords:
    """A record file written by one process or by several: with one, records go to `out/name` as always;
    with several (data parallel), rank r appends and fsyncs `out/shards/<stem>.rank<r>.jsonl`, and the
    main process merges everything into `out/name` at the end.

    Resuming reads every source: the record file and any shard a run with another number of processes
    left (a rank that was killed leaves a shard cut at a record or mid-line; the torn line is cut off), so
    a run started with N processes is continued with M. Records are keyed (`key`) and the merge keeps one
    per key, ordered by `order`: the file a single process writes in one go, whatever happened before."""

    def __init__(self, out: Path, name: str, rank: int = 0, world: int = 1):
        self.out, self.name, self.rank, self.world = Path(out), name, rank, world

    @property
    def path(self) -> Path:
        return self.out / self.name

    def shards(self) -> list[Path]:
        stem = Path(self.name).stem
        return sorted((self.out / SHARDS_DIR).glob(f"{stem}.rank*.jsonl"))

    def sources(self) -> list[Path]:
        return [self.path, *self.shards()]

    @property
    def own(self) -> Path:
        """Where this process appends."""
        if self.world == 1:
            return self.path
        return self.out / SHARDS_DIR / f"{Path(self.name).stem}.rank{self.rank}.jsonl"

    def repair(self) -> None:
        """Cut a half-written last line off every source (the main process, before the others read)."""
        for path in self.sources():
            read_records(path, repair=True)

    def done(self) -> list[dict]:
        return [r for path in self.sources() for r in read_records(path)]

    def remove(self) -> None:
        for path in self.sources():
            path.unlink(missing_ok=True)

    def open(self) -> IO[str]:
        self.own.parent.mkdir(parents=True, exist_ok=True)
        return self.own.open("a", encoding="utf-8")

    def merge(self, key, order) -> list[dict]:
        """One record per key (the first read), sorted by `order`, written to `out/name` in one piece;
        the shards are removed only once it is in place. Returns the records."""
        from visrl_bench.core.io import json_line, write_text_atomic

        shards = self.shards()
        seen: dict[Any, dict] = {}
        for path in self.sources():
            for record in read_records(path):
                seen.setdefault(key(record), record)
        records = sorted(seen.values(), key=order)
        text = "".join(json_line(r) for r in records)
        if shards or not self.path.is_file() or self.path.read_text(encoding="utf-8") != text:
            write_text_atomic(self.path, text)
        for path in shards:
            path.unlink()
        if shards and not any((self.out / SHARDS_DIR).iterdir()):
            (self.out / SHARDS_DIR).rmdir()
        return records
