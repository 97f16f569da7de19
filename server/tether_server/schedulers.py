"""Schedulers by the names clients use, created from the base model's scheduler config."""

import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

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
}
DEFAULT_SCHEDULER = "unipc"


def create(name: str, config: dict) -> SchedulerMixin:
    """A fresh scheduler: schedulers keep per-run state, so every run gets its own."""
    cls, settings = SCHEDULERS[name]
    return cls.from_config(config, **settings)


def predict_x0(
    scheduler: SchedulerMixin, sample: torch.Tensor, noise_pred: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """Predicted clean latent for schedulers whose step does not return it (DDPM-space
    latents: UniPC, DPM-Solver)."""
    alpha = scheduler.alphas_cumprod.to(sample.device)[int(t)].to(sample.dtype)
    if scheduler.config.prediction_type == "v_prediction":
        return alpha.sqrt() * sample - (1 - alpha).sqrt() * noise_pred
    return (sample - (1 - alpha).sqrt() * noise_pred) / alpha.sqrt()
