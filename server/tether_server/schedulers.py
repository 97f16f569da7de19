"""Schedulers by the names clients use, created from the base model's scheduler config.

`lcm` and `tcd` are few-step schedulers for consistency-distilled models: merged LCM
checkpoints, or SD 1.5 with an LCM-LoRA, TCD-LoRA or Hyper-SD LoRA. They give usable images
in 1 to 8 steps without classifier-free guidance; on a model that is not distilled they
give mush, as in diffusers.
"""

import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
    TCDScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from .errors import invalid

# name -> (class, settings on top of the model's config). The first is the default.
SCHEDULERS: dict[str, tuple[type[SchedulerMixin], dict]] = {
    "unipc": (UniPCMultistepScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    # DPM++ 2M as A1111 and ComfyUI name it: second-order multistep DPM-Solver++.
    "dpmpp_2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_karras": (
        DPMSolverMultistepScheduler,
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "ddim": (DDIMScheduler, {}),
    "lcm": (LCMScheduler, {}),
    "tcd": (TCDScheduler, {}),
}
DEFAULT_SCHEDULER = "unipc"
FEW_STEP = ("lcm", "tcd")

# `eta` of the schedulers whose step takes one. diffusers' pipelines pass eta=0 unless told
# otherwise (DDIM: deterministic); TCD's eta is its gamma, whose authors recommend 0.3
# (0: deterministic and softer, 1: as stochastic as LCM).
ETA = {"tcd": 0.3}


def create(name: str, config: dict) -> SchedulerMixin:
    """A fresh scheduler: schedulers keep per-run state, so every run gets its own."""
    cls, settings = SCHEDULERS[name]
    return cls.from_config(config, **settings)


def eta(name: str) -> float:
    return ETA.get(name, 0.0)


def check_steps(name: str, steps: int) -> None:
    """LCM and TCD pick their steps from a fixed schedule of `original_inference_steps`
    (50, diffusers' default and what LCM checkpoints ship); diffusers raises past it."""
    if name not in FEW_STEP:
        return
    limit = SCHEDULERS[name][0]().config.original_inference_steps
    if steps > limit:
        raise invalid(
            "steps",
            f"the {name} scheduler takes at most {limit} steps (got {steps}); "
            "distilled models need 1 to 8",
        )


def guidance_embedding(
    unet: torch.nn.Module, scales: list[float], device: torch.device, dtype: torch.dtype
) -> torch.Tensor | None:
    """The guidance-scale embedding of an LCM-distilled UNet (one with `time_cond_proj_dim`,
    such as a merged LCM checkpoint's), one row per job; None for any other UNet.

    Such a UNet takes the guidance scale as an input instead of running classifier-free
    guidance: diffusers' StableDiffusion(ControlNet)Pipeline passes this as `timestep_cond`
    and then never doubles the batch. Its get_guidance_scale_embedding, step for step."""
    dim = unet.config.time_cond_proj_dim
    if dim is None:
        return None
    w = torch.tensor([scale - 1 for scale in scales]) * 1000.0
    half = dim // 2
    step = torch.log(torch.tensor(10000.0)) / (half - 1)
    angles = w[:, None] * torch.exp(torch.arange(half, dtype=torch.float32) * -step)[None, :]
    embedding = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2 == 1:
        embedding = torch.nn.functional.pad(embedding, (0, 1))
    return embedding.to(device=device, dtype=dtype)


def predict_x0(
    scheduler: SchedulerMixin,
    result: object,
    sample: torch.Tensor,
    noise_pred: torch.Tensor,
    t: torch.Tensor,
) -> torch.Tensor:
    """The predicted clean latent of a step (for previews): what the step's `result` says
    (`pred_original_sample`; LCM's `denoised`, its boundary-conditioned output), else
    computed from the noise prediction for schedulers whose step does not return it
    (DDPM-space latents: UniPC, DPM-Solver, TCD)."""
    for name in ("pred_original_sample", "denoised"):
        x0 = getattr(result, name, None)
        if x0 is not None:
            return x0
    alpha = scheduler.alphas_cumprod.to(sample.device)[int(t)].to(sample.dtype)
    if scheduler.config.prediction_type == "v_prediction":
        return alpha.sqrt() * sample - (1 - alpha).sqrt() * noise_pred
    return (sample - (1 - alpha).sqrt() * noise_pred) / alpha.sqrt()
