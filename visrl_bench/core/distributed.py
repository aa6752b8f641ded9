"""Which process this is when a run is launched on several (`accelerate launch`, `torchrun`): rank, world
size, the barrier, and how the run was executed (for provenance).

Data-parallel `eval` and `generate` need nothing else: each rank takes every world-th window of questions
still to do and writes its own shard of records; the main process merges them
(`core.rundir.ShardedRecords`). The process group comes from accelerate (`PartialState`), on gloo when
there is no GPU: the same code runs DDP on CPUs here and on GPUs elsewhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from typing import Any


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def takes(self, turn: int) -> bool:
        """Work is dealt round-robin: the turn-th piece still to do belongs to rank turn mod world."""
        return turn % self.world == self.rank


def launched_world() -> int:
    """The number of processes the launcher started (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


@cache
def ranks() -> Ranks:
    """This process's place in the run; starts the process group on first use when there are several."""
    if launched_world() <= 1:
        return Ranks()
    state = _state()
    return Ranks(state.process_index, state.num_processes, state.local_process_index)


# a rank waits at a barrier while the main process merges records or computes the DPO reference
# log-probs alone; torch's default (10 min on NCCL) would end a 7B run there
PROCESS_GROUP_TIMEOUT_S = 4 * 3600


def _state():
    from datetime import timedelta

    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(seconds=PROCESS_GROUP_TIMEOUT_S))


def barrier() -> None:
    if ranks().world > 1:
        _state().wait_for_everyone()


def gather(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (on every rank)."""
    if ranks().world == 1:
        return [obj]
    from accelerate.utils import gather_object

    _state()
    return gather_object([obj])


def device_for(requested: str) -> str:
    """With several processes on GPUs each rank takes its own; a device named explicitly is kept."""
    r = ranks()
    if r.world > 1 and requested == "auto":
        import torch

        if torch.cuda.is_available():
            return f"cuda:{r.local_rank}"
        return "cpu"
    return requested


def execution() -> dict[str, Any]:
    """How the run was executed, for results.json's provenance."""
    import torch

    r = ranks()
    launcher = "none"
    if r.world > 1 or "LOCAL_RANK" in os.environ:
        launcher = "accelerate" if "ACCELERATE_DYNAMO_BACKEND" in os.environ else "torchrun"
    return {"processes": r.world, "launcher": launcher, "threads_per_process": torch.get_num_threads()}
