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
