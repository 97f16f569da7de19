"""A ControlNet's forward pass as the engine runs it: the control image's conditioning
embedding is computed once per job (`net.controlnet_cond_embedding`), not once per step,
and the residuals come back unscaled (the engine scales them per unit and row)."""

from __future__ import annotations

import torch
from diffusers import ControlNetModel


def forward(
    net: ControlNetModel,
    sample: torch.Tensor,
    t: torch.Tensor,
    context: torch.Tensor,
    hint: torch.Tensor,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """ControlNetModel.forward with the conditioning embedding precomputed (`hint`) and
    without scaling: the same operations as diffusers' steps 1-5 for SD 1.5 ControlNets."""
    timesteps = t[None].to(sample.device) if t.dim() == 0 else t
    t_emb = net.time_proj(timesteps.expand(sample.shape[0])).to(dtype=sample.dtype)
    emb = net.time_embedding(t_emb, None)
    sample = net.conv_in(sample)
    sample = sample + hint
    residuals = (sample,)
    for block in net.down_blocks:
        if getattr(block, "has_cross_attention", False):
            sample, block_residuals = block(
                hidden_states=sample, temb=emb, encoder_hidden_states=context
            )
        else:
            sample, block_residuals = block(hidden_states=sample, temb=emb)
        residuals += block_residuals
    if getattr(net.mid_block, "has_cross_attention", False):
        sample = net.mid_block(sample, emb, encoder_hidden_states=context)
    else:
        sample = net.mid_block(sample, emb)
    down = [block(r) for r, block in zip(residuals, net.controlnet_down_blocks)]
    return down, net.controlnet_mid_block(sample)


def acts(step: int, total: int, start: float, end: float) -> bool:
    """diffusers' controlnet_keep: a unit acts at step i of n unless i/n < start or
    (i+1)/n > end. The engine does not run a unit at all where it does not act."""
    return not (step / total < start or (step + 1) / total > end)


def residuals(
    net: ControlNetModel,
    sample: torch.Tensor,
    t: torch.Tensor,
    context: torch.Tensor,
    hint: torch.Tensor,
    scales: torch.Tensor,
    run=forward,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """`run`'s residuals (forward, or a compiled forward) scaled per row: `scales` is
    (rows, residuals), the units' weights times their mode's profile."""
    down, mid = run(net, sample, t, context, hint)
    down = [r * scales[:, k].view(-1, 1, 1, 1) for k, r in enumerate(down)]
    return down, mid * scales[:, -1].view(-1, 1, 1, 1)
