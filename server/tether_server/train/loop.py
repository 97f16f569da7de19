"""The optimisation loop every training phase shares: AdamW with a warm-up and a cosine
decay, gradients clipped to norm 1 (as diffusers' training examples do), a progress bar,
a loss log, checkpoints and resume.

A phase's randomness (which examples, which noise, which timesteps) is drawn from
generators seeded with (seed, step), so a resumed run takes the same steps as one that
never stopped. A checkpoint holds the trained modules, the optimiser's state and the
step; it is written to a temporary file first, so an interrupted write never costs the
last good one.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

LOG_EVERY = 25  # steps per line of the loss log
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class Phase:
    """One thing to train: `modules` (name -> module) for `steps` steps at peak rate `lr`."""

    name: str
    modules: dict[str, torch.nn.Module]
    steps: int
    lr: float
    warmup: int = 100
    checkpoint_every: int = 250


class Randomness:
    """Generators for step `step` of a run seeded `seed`."""

    def __init__(self, seed: int, step: int) -> None:
        self.numpy = np.random.default_rng([seed, step])
        self.torch = torch.Generator().manual_seed(seed * 1_000_003 + step)


def run(
    phase: Phase,
    loss: Callable[[Randomness], torch.Tensor],
    folder: Path,
    seed: int,
    dtype: str = "float32",
) -> None:
    """Train `phase.modules` to minimise `loss` for the phase's steps, checkpointing into
    folder/NAME.ckpt and logging the loss to folder/NAME.log.jsonl. A checkpoint there
    is resumed from; a phase whose checkpoint is complete only loads its weights. With
    `dtype` float16 the loss is scaled, so that small gradients do not vanish in float16
    (`loss` computes under `autocast`)."""
    params = [p for m in phase.modules.values() for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=phase.lr, weight_decay=1e-2)
    device = params[0].device.type
    scaler = torch.amp.GradScaler(device, enabled=dtype == "float16")
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = folder / f"{phase.name}.ckpt"
    step = 0
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=True)
        for name, module in phase.modules.items():
            module.load_state_dict(state["modules"][name])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
    if step >= phase.steps:
        return
    for module in phase.modules.values():
        module.train()
    log = (folder / f"{phase.name}.log.jsonl").open("a")
    bar = tqdm(total=phase.steps, initial=step, desc=phase.name, unit="step", smoothing=0.05)
    window, started = [], time.perf_counter()
    try:
        while step < phase.steps:
            for group in optimizer.param_groups:
                group["lr"] = phase.lr * _schedule(step, phase)
            value = loss(Randomness(seed, step))
            scaler.scale(value).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            window.append(value.item())
            bar.update(1)
            if step % LOG_EVERY == 0 or step == phase.steps:
                mean = sum(window) / len(window)
                bar.set_postfix(loss=f"{mean:.4f}")
                record = {"step": step, "loss": mean, "lr": optimizer.param_groups[0]["lr"]}
                record["seconds"] = round(time.perf_counter() - started, 1)
                log.write(json.dumps(record) + "\n")
                log.flush()
                window = []
            if step % phase.checkpoint_every == 0 or step == phase.steps:
                _save(checkpoint, phase, optimizer, step)
    finally:
        bar.close()
        log.close()
        for module in phase.modules.values():
            module.eval()


def autocast(device: torch.device, dtype: str) -> torch.autocast:
    """Mixed precision in `dtype` (trained weights stay float32); off for float32."""
    return torch.autocast(device.type, dtype=DTYPES[dtype], enabled=dtype != "float32")


def _schedule(step: int, phase: Phase) -> float:
    """Linear warm-up, then a cosine from 1 down to 0.1 of the peak rate."""
    if step < phase.warmup:
        return (step + 1) / phase.warmup
    progress = (step - phase.warmup) / max(phase.steps - phase.warmup, 1)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _save(path: Path, phase: Phase, optimizer: torch.optim.Optimizer, step: int) -> None:
    state = {
        "step": step,
        "modules": {name: m.state_dict() for name, m in phase.modules.items()},
        "optimizer": optimizer.state_dict(),
    }
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    partial.replace(path)
