"""A KV cache that appends in place.

transformers' DynamicCache grows by `torch.cat`: every decoding step copies each layer's whole cache to add
one token. With K sampled continuations of a 200-token image prompt, or a second turn that follows a first
one, that copy is a large part of the step (profiled: 13% of a visual-CoT eval, more with K=8). Here each
layer keeps its keys and values in a buffer with spare room and hands attention a view of the filled part,
so a step writes one token. Everything else DynamicCache does (crop, batch_repeat_interleave, masks) works
unchanged: those replace `keys`/`values`, and the layer adopts whatever tensor it then finds there.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class AppendInPlaceLayer(DynamicLayer):
    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None
        self._view: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
        self._length = 0

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self.keys is not self._view[0]:
            # first call, or crop/repeat/select replaced the tensors: they become the buffer
            self._buffers = (self.keys, self.values) if self.keys.numel() else None
            self._length = self.keys.shape[-2] if self.keys.numel() else 0
        n, add = self._length, key_states.shape[-2]
        if self._buffers is None or n + add > self._buffers[0].shape[-2]:
            self._grow(key_states, value_states, n + add)
        keys, values = self._buffers
        keys[:, :, n : n + add] = key_states
        values[:, :, n : n + add] = value_states
        self._length = n + add
        self._view = (keys[:, :, : n + add], values[:, :, : n + add])
        self.keys, self.values = self._view
        return self.keys, self.values

    def _grow(self, key_states: torch.Tensor, value_states: torch.Tensor, needed: int) -> None:
        # room for a prefill plus a generation's worth of tokens before the next copy
        capacity = needed + max(64, needed // 2)
        new = []
        for old, states in zip(self._buffers or (None, None), (key_states, value_states), strict=True):
            buffer = states.new_empty((*states.shape[:2], capacity, states.shape[-1]))
            if old is not None and self._length:
                buffer[:, :, : self._length] = old[:, :, : self._length]
            new.append(buffer)
        self._buffers = (new[0], new[1])


def append_in_place_cache(config) -> DynamicCache:
    """A DynamicCache for `config` whose full-attention layers append in place (sliding-window layers, which
    drop old tokens, keep transformers' own)."""
    cache = DynamicCache(config=config)
    cache.layers = [AppendInPlaceLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache
