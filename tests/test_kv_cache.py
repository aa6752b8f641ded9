"""The append-in-place KV cache holds exactly what transformers' DynamicLayer holds, through growth past
its spare room, crop and batch_repeat_interleave."""

import torch
from transformers.cache_utils import DynamicLayer

from visrl_bench.models.kv_cache import AppendInPlaceLayer


def _states(batch: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 2, length, 4, generator=g), torch.randn(batch, 2, length, 4, generator=g)


def test_append_in_place_matches_dynamic_layer():
    ours, theirs = AppendInPlaceLayer(), DynamicLayer()
    steps = [("add", 5), *[("add", 1)] * 70, ("crop", -30), ("add", 3), ("repeat", 3)]
    steps += [("add", 1), ("add", 90)]
    seed, batch = 0, 2
    for op, n in steps:
        if op == "add":
            seed += 1
            k, v = _states(batch, n, seed)
            got, want = ours.update(k, v), theirs.update(k, v)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        elif op == "crop":
            ours.crop(n)
            theirs.crop(n)
        else:
            ours.batch_repeat_interleave(n)
            theirs.batch_repeat_interleave(n)
            batch *= n
        assert ours.get_seq_length() == theirs.get_seq_length()
        assert torch.equal(ours.keys, theirs.keys) and torch.equal(ours.values, theirs.values)
    assert ours.get_seq_length() == 5 + 70 - 30 + 3 + 1 + 90


def test_appending_one_token_does_not_copy_the_cache():
    layer = AppendInPlaceLayer()
    layer.update(*_states(1, 10, 1))
    buffer = layer.keys.untyped_storage().data_ptr()
    for seed in range(2, 40):
        layer.update(*_states(1, 1, seed))
        assert layer.keys.untyped_storage().data_ptr() == buffer  # written in place, same storage
