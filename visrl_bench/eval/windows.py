"""How eval walks a task: windows of samples fixed by position, the `--limit`, the progress bar, and the
timing of a run merged over its processes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from visrl_bench.task import Sample


def windows(samples: Iterable[tuple[int, Sample]], size: int) -> Iterator[list[tuple[int, Sample]]]:
    window: list[tuple[int, Sample]] = []
    for item in samples:
        window.append(item)
        if len(window) == size:
            yield window
            window = []
    if window:
        yield window


def merged_timing(per_rank: list[dict[str, tuple[int, float]]]) -> dict[str, dict]:
    """Each task's samples done in this run and its wall time (the slowest rank's), from every rank's."""
    out = {}
    for name in per_rank[0]:
        count = sum(t[name][0] for t in per_rank)
        seconds = max(t[name][1] for t in per_rank)
        out[name] = {
            "samples": count,
            "seconds": round(seconds, 3),
            "samples_per_second": round(count / seconds, 3) if count and seconds else None,
        }
        if len(per_rank) > 1:
            out[name]["samples_per_process"] = [t[name][0] for t in per_rank]
    return out


def enumerate_limited(samples: Iterable[Sample], limit: int | None) -> Iterator[tuple[int, Sample]]:
    for position, sample in enumerate(samples):
        if limit is not None and position >= limit:
            return
        yield position, sample


def progress_bar(task, limit: int | None, already: int, enabled: bool):
    from tqdm.auto import tqdm

    total = task.count() if hasattr(task, "count") else None
    if limit is not None:
        total = min(limit, total) if total is not None else limit
    return tqdm(
        total=total, initial=already, desc=task.name, unit="sample", disable=not enabled, dynamic_ncols=True
    )
