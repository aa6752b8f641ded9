"""The box-coordinate tokens of a tiny base, made smooth in space: sin-cos initialisation (of the coordinate
tokens and the vision tower's absolute positions) and Gaussian soft targets in the loss. With one token per
coordinate value, a near miss is otherwise as wrong as a wild one and the values start as unrelated rows:
the tiny bases' grounding stayed at the box prior without them (docs/zoomworld.md)."""

from __future__ import annotations

import math

from visrl_bench.models.tiny import coordinate_tokens


def sincos(positions, dim: int):
    """Transformer sin-cos features of (fractional) positions: neighbours get similar vectors."""
    import torch

    freqs = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    angles = torch.as_tensor(positions, dtype=torch.float32)[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)[:, :dim]


def sincos_init(model, tokenizer, arch: str, scale: float = 0.02, outputs_only: bool = False) -> None:
    """Initialise what grounding needs to be smooth in space: the learned absolute vision position
    embeddings (LLaVA's, Qwen3-VL's square grid) as 2-D sin-cos of the patch row/column (Qwen2-VL's vision
    tower has only rotary, relative positions), and every box-coordinate token's input and output embedding
    as sin-cos of its value, so that a box learned near x is likely near x' too (one token per value means
    1001 unrelated rows)."""
    import torch

    def grid_like(weight, patch, side: int):
        dim = weight.shape[1]
        rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        grid = torch.cat([sincos(rows.flatten(), dim // 2), sincos(cols.flatten(), dim - dim // 2)], 1)
        # as strong as a unit-variance patch's embedding, or LayerNorm drowns the position in content
        return grid * (patch.std() * patch[0].numel() ** 0.5) / grid.std()

    with torch.no_grad():
        if arch == "llava" and not outputs_only:
            emb = model.model.vision_tower.embeddings
            weight = emb.position_embedding.weight
            weight[1:] = grid_like(weight, emb.patch_embedding.weight, emb.image_size // emb.patch_size)
        if arch == "qwen3_vl" and not outputs_only:
            visual = model.model.visual
            weight = visual.pos_embed.weight
            weight[:] = grid_like(weight, visual.patch_embed.proj.weight, visual.num_grid_per_side)
        ids, positions = coordinate_scale(tokenizer, arch)
        matrices = [model.get_output_embeddings().weight]
        if not outputs_only:
            matrices.append(model.get_input_embeddings().weight)
        for matrix in matrices:
            feats = sincos(positions, matrix.shape[1])
            matrix[ids] = feats * scale / feats.std()


def coordinate_scale(tokenizer, arch: str):
    """(token ids, values on a 0-100 scale) of the arch's box-coordinate tokens: LLaVA's 0.00-1.00 and
    Qwen2-VL's 0-1000 on one scale, so a sigma or a sin-cos wavelength means the same distance for both."""
    import torch

    values = coordinate_tokens(arch)
    per_unit = 100 if arch == "llava" else 0.1
    ids = tokenizer.convert_tokens_to_ids(list(values))
    return torch.tensor(ids), torch.tensor([float(v) * per_unit for v in values])


class SoftCoordinateLoss:
    """Cross-entropy over answer tokens, where a box-coordinate label is a Gaussian over the coordinate
    tokens around its value (the target sums to 1 over them; everything else in the vocabulary is pushed
    down as under a one-hot label). Other labels stay one-hot; the mean is over answer tokens, as the
    model's own loss."""

    def __init__(self, tokenizer, arch: str, vocab_size: int, sigma: float):
        import torch

        self.ids, values = coordinate_scale(tokenizer, arch)
        self.slot = torch.full((vocab_size,), -1, dtype=torch.long)
        self.slot[self.ids] = torch.arange(len(self.ids))
        targets = torch.exp(-((values[:, None] - values[None]) ** 2) / (2 * sigma**2))
        self.targets = targets / targets.sum(1, keepdim=True)

    def __call__(self, logits, labels):
        import torch

        labels = labels[:, 1:]
        keep = labels != -100
        logp = torch.log_softmax(logits[:, :-1][keep].float(), dim=-1)
        wanted = labels[keep]
        loss = -logp.gather(1, wanted[:, None]).squeeze(1)
        slot = self.slot.to(wanted.device)[wanted]
        coord = slot >= 0
        if coord.any():
            soft = self.targets.to(logp.device)[slot[coord]]
            loss[coord] = -(soft * logp[coord][:, self.ids.to(logp.device)]).sum(1)
        return loss.mean()
