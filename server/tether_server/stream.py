"""Stream batching for live sessions (StreamDiffusion's "Stream Batch").

A live frame runs n denoising steps (steps x strength). Run one after another, each frame
costs n network calls of one row. Here the frames in flight are denoised together: frame k
enters at step 1 while frame k-1 is at step 2, ..., frame k-n+1 at step n, and one call of
the networks over those n rows advances every frame by one step and finishes the oldest.
Each call still answers one frame, but the frame it finishes entered n-1 calls earlier:
throughput rises where a batch of n rows costs less than n calls of one (a GPU, where small
batches leave it idle), and lag grows by n-1 frames. On a CPU a batch costs what its rows
cost, so there it only adds lag.

Each frame keeps its own generator, stage scheduler, control images and weights, so its
image is the one Engine.run gives for the frame alone (up to the float rounding of another
batch size): the stream reuses the engine's own pieces (prompt cache, initial latents, unit
preparation) for that. A unit acts on the rows whose step lies in its window; the others
get it at scale 0, which adds exact zeros, as diffusers does outside a window.

1. `submit(job, frame_id, enter)` marks a live frame's job for this stream; `Worker.run`
   (through `Engine.run`) then calls `advance` on the engine thread. A frame that `enter`s
   joins at the first step; one that does not (similar to the last one that entered: the
   session's reuse threshold) only moves the frames in flight on.
2. The call answers the frame that finishes. While the stream fills (after the first frame
   or a change of size), no frame is finished yet: the call answers the most advanced frame
   with its predicted clean image so far, so every call answers once and clients that pace
   frames by answers keep going; a frame may then be answered more than once, its image
   sharper each time. `answered` names the frame and when it arrived.
3. A frame of another size restarts the stream: the frames in flight are dropped
   (`discarded` counts them). A new config makes a new stream.
Schedulers that keep a history of steps (unipc, dpmpp_2m) cannot denoise rows at different
steps in one call: their frames run one at a time, as without stream batching.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import time
from dataclasses import dataclass

import torch

from . import autoencoders, compiled, controlnet, initial, schedulers
from .engine import Engine, Job, Output

# Schedulers whose step depends on nothing but the step index: rows can be at any step.
STREAMABLE = ("lcm", "tcd", "euler", "euler_a", "ddim")


@dataclass
class _Slot:
    """One unit of a frame, over the frame's rows ([negative, prompt] under guidance)."""

    net: torch.nn.Module
    hint: torch.Tensor  # the control image's conditioning embedding, per row
    scales: torch.Tensor  # (rows, residuals); zeros on a row the unit does not condition
    window: tuple[float, float]


@dataclass
class _Entry:
    """A frame in flight."""

    frame_id: int
    arrived: float
    job: Job
    generator: torch.Generator
    latents: torch.Tensor  # (1, 4, h, w), ready for the frame's next step
    slots: list[_Slot]
    stage: int = 0  # steps done
    x0: torch.Tensor | None = None  # predicted clean latent after the last step


@dataclass
class _Setup:
    """What every frame of the stream shares, fixed by the first frame's batch key."""

    key: tuple
    stages: list  # a scheduler per step, its step index set
    timesteps: torch.Tensor
    cfg: bool
    embeds: torch.Tensor  # (1 or 2, 77, dim): [negative, prompt] under guidance
    cond: torch.Tensor | None  # an LCM-distilled UNet's guidance embedding, one row
    step_kwargs: dict  # eta, for the schedulers whose step takes one


class StreamBatch:
    """One live session's frames in flight. Not thread-safe: the session submits one frame
    at a time and reads `answered` once its run is done."""

    def __init__(self) -> None:
        self.discarded = 0  # frames dropped in flight by a change of size
        self.answered: tuple[int, float] | None = None  # (frame id, arrival) last answered
        self._entries: list[_Entry] = []  # oldest (most advanced) first
        self._setup: _Setup | None = None
        self._pending: tuple[int, float, bool] | None = None

    @property
    def in_flight(self) -> int:
        return len(self._entries)

    def submit(self, job: Job, frame_id: int, arrived: float, enter: bool = True) -> None:
        """Mark `job` (a live frame's, arrived at `arrived`) to run through this stream."""
        job.stream = self
        self._pending = (frame_id, arrived, enter)

    def advance(self, engine: Engine, job: Job) -> Output:
        """One call: the submitted frame enters (or not), every frame in flight moves one
        step, and the output of the frame `answered` names comes back."""
        frame_id, arrived, enter = self._pending
        started = time.perf_counter()
        if job.scheduler not in STREAMABLE:
            self.answered = (frame_id, arrived)
            return engine.run([dataclasses.replace(job, stream=None)])[0]
        try:
            if enter or not self._entries:
                self._enter(engine, job, frame_id, arrived)
            prepared = time.perf_counter()
            rows = len(self._entries)
            self._step(engine)
            denoised = time.perf_counter()
            image = self._answer(engine)
        except BaseException:
            self._entries.clear()  # a failed step leaves the frames in flight half-done
            raise
        finished = time.perf_counter()
        return Output(
            image=image,
            seed=job.seed,
            prepare_ms=(prepared - started) * 1000,
            denoise_ms=(denoised - prepared) * 1000,
            decode_ms=(finished - denoised) * 1000,
            batch_size=rows,  # frames in the call
            steps=1,  # each moved on by one step
        )

    # -- the pieces ------------------------------------------------------------------------

    def _enter(self, engine: Engine, job: Job, frame_id: int, arrived: float) -> None:
        key = engine.batch_key(job)
        if self._setup is None or self._setup.key != key:
            self.discarded += len(self._entries)
            self._entries.clear()
            self._setup = _prepare(engine, job, key)
        setup = self._setup
        generator = torch.Generator("cpu").manual_seed(job.seed)
        latents, _ = initial.latents(
            engine.models, [job], [generator], setup.stages[0], setup.timesteps
        )
        slots = [_slot(engine, job, k, setup.cfg) for k in range(len(job.controls))]
        self._entries.append(_Entry(frame_id, arrived, job, generator, latents, slots))

    def _step(self, engine: Engine) -> None:
        """One call of the networks over every frame in flight, then each frame's own
        scheduler step, as Engine.run's loop makes it."""
        setup, models, entries = self._setup, engine.models, self._entries
        rows = 2 if setup.cfg else 1
        stages = [copy.copy(setup.stages[entry.stage]) for entry in entries]
        ts = [setup.timesteps[entry.stage] for entry in entries]
        sample = torch.cat(
            [
                stage.scale_model_input(torch.cat([entry.latents] * rows), t)
                for stage, t, entry in zip(stages, ts, entries)
            ]
        )
        t_rows = torch.stack(ts).repeat_interleave(rows)
        context = setup.embeds.repeat(len(entries), 1, 1)
        cond = None if setup.cond is None else setup.cond.repeat(len(entries), 1)
        nets, hints, scales = [], [], []
        for k, slot in enumerate(entries[0].slots):
            acting = [
                controlnet.acts(entry.stage, len(setup.stages), *entry.slots[k].window)
                for entry in entries
            ]
            if any(acting):
                nets.append(slot.net)
                hints.append(torch.cat([entry.slots[k].hint for entry in entries]))
                scales.append(
                    torch.cat([e.slots[k].scales * float(a) for e, a in zip(entries, acting)])
                )
        args = (models.unet, nets, sample, t_rows, context, hints, scales, cond)
        if engine.fast is not None:
            noise = engine.fast.run(*args)
        else:
            noise = compiled.network_step(*args)
        for k, (entry, stage, t) in enumerate(zip(entries, stages, ts)):
            noise_pred = noise[k * rows : (k + 1) * rows]
            if setup.cfg:
                uncond, text = noise_pred.chunk(2)
                guidance = torch.tensor(entry.job.guidance_scale, dtype=noise.dtype)
                noise_pred = uncond + guidance.to(noise.device) * (text - uncond)
            kwargs = {"generator": [entry.generator], **setup.step_kwargs}
            result = stage.step(noise_pred, t, entry.latents, **kwargs)
            entry.x0 = schedulers.predict_x0(stage, result, entry.latents, noise_pred, t)
            entry.latents = result.prev_sample
            entry.stage += 1

    def _answer(self, engine: Engine):
        """The finished frame, or while the stream fills the most advanced one so far."""
        first = self._entries[0]
        done = first.stage == len(self._setup.stages)
        vae = autoencoders.chosen(engine.models, first.job.autoencoder)
        image = autoencoders.decode(vae, first.latents if done else first.x0)[0]
        self.answered = (first.frame_id, first.arrived)
        if done:
            self._entries.pop(0)
        return image


def _prepare(engine: Engine, job: Job, key: tuple) -> _Setup:
    """Stage schedulers and timesteps as Engine.run sets them up, and the prompt."""
    models = engine.models
    cond = schedulers.guidance_embedding(
        models.unet, [job.guidance_scale], models.device, models.dtype
    )
    cfg = job.guidance_scale > 1 and cond is None
    t_start = job.steps - min(int(job.steps * job.strength), job.steps)
    stages = []
    for k in range(job.steps - t_start):
        stage = schedulers.create(job.scheduler, models.scheduler_config)
        stage.set_timesteps(job.steps, device=models.device)
        stage.set_begin_index(t_start + k)
        stages.append(stage)
    # The engine has activated the job's LoRAs (Engine.run), which the text encoder sees.
    negatives = [job.negative_prompt] if cfg else None
    embeds = engine.prompts(job.model).batch(
        models.text_encoder, [job.prompt], negatives, engine.loras(models).text_encoder_key
    )
    step_kwargs = {}
    if "eta" in inspect.signature(stages[0].step).parameters:
        step_kwargs["eta"] = schedulers.eta(job.scheduler)
    timesteps = stages[0].timesteps[t_start:]
    return _Setup(key, stages, timesteps, cfg, embeds, cond, step_kwargs)


def _slot(engine: Engine, job: Job, k: int, cfg: bool) -> _Slot:
    """Unit `k` of the frame's job over both guidance rows: where the engine conditions only
    the prompt row (control mode), the other row gets the same hint at scale 0."""
    unit = engine._prepare_unit([job], k, cfg)
    rows = 2 if cfg else 1
    picks = unit.rows.tolist()
    hint = torch.cat([unit.hint[picks.index(r) if r in picks else 0][None] for r in range(rows)])
    scales = torch.stack(
        [unit.scales[picks.index(r)] if r in picks else unit.scales[0] * 0 for r in range(rows)]
    )
    control = job.controls[k]
    return _Slot(unit.net, hint, scales, (control.start, control.end))
