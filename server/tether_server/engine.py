"""The diffusion engine: Stable Diffusion 1.5 with any number of ControlNet units.

The engine owns its denoising loop over diffusers' components instead of calling the
Pipeline classes, so that it can
- run a batch of compatible jobs (same size, steps, scheduler, control-model slots, LoRA
  set and prompt length) through one loop, each job with its own prompt, seed, control
  images and weights;
- skip a unit outside its start/end window (diffusers runs it with weight 0);
- encode each control image once per job instead of once per step;
- preview any step and stop between steps when a job is cancelled.

It is held to diffusers' StableDiffusionControlNet(Img2Img)Pipeline by parity tests: the
same components, seed and scheduler give the same image. Every tensor operation that
reaches the image is the one diffusers performs, in the same order and batch layout
(rows [uncond_0 .. uncond_B-1, cond_0 .. cond_B-1] under classifier-free guidance).
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from . import controlnet, initial, schedulers, seamless
from .catalog import Catalog, ControlEntry
from .conditioning import PromptEncoder
from .errors import invalid, shown
from .lora import Loras, LoraWeight
from .lora import check as check_loras
from .models import ModelSet
from .registry import ModelRegistry

CONTROL_MODES = ("balanced", "prompt", "control")
PREVIEW_MODES = ("none", "fast", "full")
MAX_CONTROLS = 8  # units per job

# SD 1.5 latent channels -> RGB (rows: latent channels; columns: R, G, B). ComfyUI's
# coefficients; applied to the predicted clean latent they give a 1/8-size preview for free.
LATENT_RGB = [
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
]

# A1111's "My prompt is more important": residual k of n is scaled by 0.825^(n-1-k).
PROMPT_MODE_DECAY = 0.825


@dataclass
class ControlInput:
    """One ControlNet unit of a job. `image` is the control map at the output size."""

    model: str
    image: np.ndarray | None  # (height, width, 3) float32 in [0, 1]; None: not made yet
    weight: float = 1.0
    start: float = 0.0
    end: float = 1.0
    mode: str = "balanced"


ProgressCallback = Callable[[int, int, "np.ndarray | None"], None]


@dataclass(kw_only=True)
class Job:
    """One generation: GenerateRequest's fields once the request layer (`jobs`) has applied
    its defaults. The engine keeps no request defaults of its own."""

    prompt: str  # A1111 syntax: emphasis, BREAK, embeddings by name (see `conditioning`)
    negative_prompt: str = ""
    model: str = ""  # a base model name from the registry; "": its default
    loras: list[LoraWeight] = field(default_factory=list)
    seed: int = 0
    steps: int
    guidance_scale: float
    width: int
    height: int
    scheduler: str = schedulers.DEFAULT_SCHEDULER
    controls: list[ControlInput] = field(default_factory=list)
    init_image: np.ndarray | None = None  # (height, width, 3) float32 in [0, 1]
    strength: float = 1.0  # with init_image: how much of it is repainted
    # Inpainting, with init_image: (height, width) float32, 1 = repaint, 0 = keep.
    mask: np.ndarray | None = None
    tiling: str = "none"  # seamless tiling: "none", "x", "y" or "xy" (see `seamless`)
    preview: str = "none"
    preview_every: int = 1
    # Called after every step with (step, total, preview or None); preview is
    # (h, w, 3) float32 in [0, 1].
    on_progress: ProgressCallback | None = None
    # Set from any thread to stop the job before its next step.
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass
class Output:
    """A finished job."""

    image: np.ndarray  # (height, width, 3) float32 in [0, 1]
    seed: int
    prepare_ms: float
    denoise_ms: float
    decode_ms: float
    batch_size: int
    steps: int  # denoising steps run (img2img runs steps x strength)


@dataclass
class _Unit:
    """One control slot of a batch: the rows it conditions and everything fixed per run."""

    net: torch.nn.Module
    rows: torch.Tensor  # rows of the UNet batch this unit can condition, ascending
    jobs: list[int]  # job index of each row
    windows: list[tuple[float, float]]  # (start, end) of each row
    hint: torch.Tensor  # the control images through the conditioning embedding, per row
    scales: torch.Tensor  # (rows, residuals): weight x mode profile


class Engine:
    """Runs jobs on a registry's models (or one model set), with the catalog's LoRAs and
    embeddings. Not thread-safe: one thread calls `run`; `check` and `batch_key` may run on
    any thread."""

    def __init__(
        self,
        models: ModelSet | ModelRegistry,
        *,
        catalog: Catalog | None = None,
        max_pixels: int = 1024 * 1024,
        max_canvas_pixels: int = 4096 * 4096,  # an output made in tiles (`tiles`)
        max_steps: int = 150,
        max_controls: int = MAX_CONTROLS,
        prompt_cache_size: int = 256,
    ) -> None:
        registry = self.registry = ModelRegistry.of(models, catalog)
        self.models = registry.last_used()  # the running batch's, set by `run`
        self.max_pixels = max_pixels
        self.max_canvas_pixels = max_canvas_pixels
        self.max_steps = max_steps
        self.max_controls = max_controls
        self._latent_rgb = torch.tensor(LATENT_RGB, device=registry.device, dtype=registry.dtype)
        self._prompt_cache_size = prompt_cache_size
        # Per base model: prompt encoders (made from its tokenizer, on any thread, kept) and
        # LoRAs (layers in a loaded model's modules: dropped when the model is unloaded).
        self._prompt_encoders: dict[str, PromptEncoder] = {}
        self._prompt_encoders_lock = threading.Lock()
        self._loras: dict[str, Loras] = {}

    # -- validation ----------------------------------------------------------------------

    def check(self, job: Job, *, max_steps: int | None = None, canvas: bool = False) -> None:
        """Raise InvalidArgument or NotFound, naming the field, if the job cannot run.

        The one range check of a job. It is cheap and reads no pixel, so the request layer
        (`jobs`) runs it before it decodes any image, with the images still None (an image
        that is None is not checked), and again once they are made. `max_steps` lowers the
        server's limit (live sessions run 1 to 4 steps). A `canvas` is made in tiles by img2img
        (`tiles`): up to max_canvas_pixels, its tiles up to max_pixels.
        """
        self.check_size(job.width, job.height, canvas)
        max_steps = self.max_steps if max_steps is None else max_steps
        if not 1 <= job.steps <= max_steps:
            raise invalid("steps", f"must be 1 to {max_steps} (got {job.steps})")
        prompts = self.prompts(job.model)
        prompts.check(job.prompt, "prompt")
        prompts.check(job.negative_prompt, "negative_prompt")
        check_loras(job.loras, self.registry.catalog.loras)
        if not 0 <= job.guidance_scale <= 30:
            raise invalid("guidance_scale", f"must be 0 to 30 (got {job.guidance_scale:g})")
        if job.scheduler not in schedulers.SCHEDULERS:
            raise invalid(
                "scheduler",
                f"unknown scheduler {shown(job.scheduler)}; use one of "
                f"{', '.join(schedulers.SCHEDULERS)}",
            )
        if job.tiling not in seamless.TILINGS:
            raise invalid("tiling", f"must be one of {', '.join(seamless.TILINGS)}")
        if job.preview not in PREVIEW_MODES:
            raise invalid("preview", f"must be one of {', '.join(PREVIEW_MODES)}")
        if job.preview_every < 1:
            raise invalid("preview.every", f"must be 1 or more (got {job.preview_every})")
        size = (job.height, job.width, 3)
        if job.init_image is not None and job.init_image.shape != size:
            raise invalid("init_image", f"is {_describe(job.init_image)}; must be {_wxh(job)} RGB")
        if job.init_image is not None or canvas:
            if not 0 < job.strength <= 1:
                raise invalid("strength", f"must be in (0, 1] (got {job.strength:g})")
            if int(job.steps * job.strength) < 1:
                raise invalid(
                    "strength",
                    f"steps x strength = {job.steps} x {job.strength:g} leaves no step to run; "
                    "raise steps or strength",
                )
        if job.mask is not None:
            if job.init_image is None:
                raise invalid("mask", "needs init_image: inpainting repaints part of an image")
            if job.mask.shape != size[:2]:
                raise invalid(
                    "mask", f"is {_describe(job.mask)}; must be the output size {_wxh(job)}"
                )
        if len(job.controls) > self.max_controls:
            raise invalid(
                "controls", f"at most {self.max_controls} units (got {len(job.controls)})"
            )
        for i, unit in enumerate(job.controls):
            where = f"controls[{i}]"
            self.control_model(unit.model, where)
            if not 0 <= unit.weight <= 2:
                raise invalid(f"{where}.weight", f"must be 0 to 2 (got {unit.weight:g})")
            for name, value in (("start", unit.start), ("end", unit.end)):
                if not 0 <= value <= 1:
                    raise invalid(f"{where}.{name}", f"must be 0 to 1 (got {value:g})")
            if unit.start > unit.end:
                raise invalid(
                    f"{where}.start",
                    f"must not be after end (got start={unit.start:g}, end={unit.end:g})",
                )
            if unit.mode not in CONTROL_MODES:
                raise invalid(f"{where}.mode", f"must be one of {', '.join(CONTROL_MODES)}")
            if unit.image is not None and unit.image.shape != size:
                raise invalid(
                    f"{where}.image",
                    f"is {_describe(unit.image)}; must be the output size {_wxh(job)}, RGB",
                )

    def check_size(self, width: int, height: int, canvas: bool = False) -> None:
        """An output size: positive multiples of 8, at most `max_pixels` pixels (a canvas:
        `max_canvas_pixels`)."""
        max_pixels = self.max_canvas_pixels if canvas else self.max_pixels
        for name, value in (("width", width), ("height", height)):
            if value <= 0 or value % 8:
                raise invalid(name, f"must be a positive multiple of 8 (got {value})")
        if width * height > max_pixels:
            raise invalid(
                "width",
                f"{width}x{height} is {width * height} pixels; this server accepts at most "
                f"{max_pixels} (e.g. {_square(max_pixels)})",
            )

    def control_model(self, name: str, where: str) -> ControlEntry:
        """The control model `name` (its kind), or NotFound naming the unit (`where`)."""
        return self.registry.control(name, where)

    def prompts(self, model: str) -> PromptEncoder:
        """The prompt encoder of the base model `model` ("" = the default), made from its
        tokenizer on first use; the model's weights need not be loaded."""
        name = self.registry.base(model).name
        with self._prompt_encoders_lock:
            encoder = self._prompt_encoders.get(name)
            if encoder is None:
                tokenizer, width = self.registry.text_side(name)
                encoder = self._prompt_encoders[name] = PromptEncoder(
                    tokenizer, width, self.registry.catalog.embeddings, self._prompt_cache_size
                )
        return encoder

    def loras(self, models: ModelSet) -> Loras:
        """The LoRAs of a loaded model set (engine thread). A model loaded again starts
        without LoRA layers, and an unloaded model's are let go."""
        loaded = self.registry.loaded()
        for name in [name for name in self._loras if name not in loaded]:
            del self._loras[name]
        loras = self._loras.get(models.name)
        if loras is None or loras.models is not models:
            loras = self._loras[models.name] = Loras(models, self.registry.catalog.loras)
        return loras

    def batch_key(self, job: Job) -> tuple:
        """Jobs with equal keys can share one denoising loop."""
        cfg = job.guidance_scale > 1
        prompts = self.prompts(job.model)
        chunks = len(prompts.windows(job.prompt, "prompt"))
        if cfg:  # the prompt and the negative prompt are padded to the longer
            negative = prompts.windows(job.negative_prompt, "negative_prompt")
            chunks = max(chunks, len(negative))
        return (
            self.registry.base(job.model).name,
            job.width,
            job.height,
            job.steps,
            job.scheduler,
            cfg,
            Loras.key(job.loras),
            chunks,
            tuple(unit.model for unit in job.controls),
            None if job.init_image is None else int(job.steps * job.strength),
            job.mask is not None and job.strength == 1.0,
            job.mask is not None,
            job.tiling,
        )

    # -- the run ---------------------------------------------------------------------------

    def run(self, jobs: list[Job]) -> list[Output | None]:
        """Run compatible jobs (equal `batch_key`, each passed `check`) through one loop.

        Returns one Output per job, None for a job cancelled before it finished.
        """
        with contextlib.ExitStack() as run_scope:
            return self._run(jobs, run_scope)

    @torch.inference_mode()
    def _run(self, jobs: list[Job], run_scope: contextlib.ExitStack) -> list[Output | None]:
        first = jobs[0]
        # 0. The jobs' model, loaded if need be; the last one let go so that unloading frees it.
        self.models = None
        models = self.models = self.registry.load(first.model, [u.model for u in first.controls])
        device, dtype = models.device, models.dtype
        batch = len(jobs)
        cfg = first.guidance_scale > 1
        started = time.perf_counter()

        # 1. The batch's LoRAs, then the text: negative prompts first, as diffusers
        # concatenates them.
        loras = self.loras(models)
        loras.activate(first.loras)
        # Seamless tiling: circular padding in the models until the run ends; after the
        # LoRAs, whose first use adds convolutions that must wrap too.
        run_scope.enter_context(seamless.wrapped(models.modules(), first.tiling))
        negatives = [job.negative_prompt for job in jobs] if cfg else None
        prompts = [job.prompt for job in jobs]
        embeds = self.prompts(first.model).batch(
            models.text_encoder, prompts, negatives, loras.text_encoder_key
        )

        # 2. Timesteps; img2img starts part-way, as diffusers' get_timesteps does.
        scheduler = schedulers.create(first.scheduler, models.scheduler_config)
        scheduler.set_timesteps(first.steps, device=device)
        timesteps = scheduler.timesteps
        if first.init_image is not None:
            t_start = first.steps - min(int(first.steps * first.strength), first.steps)
            timesteps = timesteps[t_start * scheduler.order :]
            if hasattr(scheduler, "set_begin_index"):
                scheduler.set_begin_index(t_start * scheduler.order)

        # 3. Initial latents from per-job CPU generators (docs/conventions.md, "Seeds").
        generators = [torch.Generator("cpu").manual_seed(job.seed) for job in jobs]
        latents, inpaint = initial.latents(models, jobs, generators, scheduler, timesteps)

        # 4. Control units: the conditioning embedding of each image is computed once here.
        units = [self._prepare_unit(jobs, slot, cfg) for slot in range(len(first.controls))]

        step_kwargs = {}
        step_params = inspect.signature(scheduler.step).parameters
        if "generator" in step_params:
            step_kwargs["generator"] = generators
        if "eta" in step_params:
            step_kwargs["eta"] = 0.0
        guidance = torch.tensor([j.guidance_scale for j in jobs], device=device, dtype=dtype)
        guidance = guidance.view(-1, 1, 1, 1)
        live = [True] * batch
        prepared = _sync_time(device)

        # 5. The loop.
        total = len(timesteps)
        for i, t in enumerate(timesteps):
            for j, job in enumerate(jobs):
                if live[j] and job.cancel.is_set():
                    live[j] = False
            if not any(live):
                return [None] * batch
            rows = None if all(live) else _rows(live, cfg, device)

            model_input = torch.cat([latents] * 2) if cfg else latents
            model_input = scheduler.scale_model_input(model_input, t)
            down, mid = self._control_residuals(units, live, i, total, model_input, t, embeds)

            unet_input, unet_embeds = _take(model_input, rows), _take(embeds, rows)
            if rows is not None and down is not None:
                down, mid = [d.index_select(0, rows) for d in down], mid.index_select(0, rows)
            noise_pred = models.unet(
                unet_input,
                t,
                encoder_hidden_states=unet_embeds,
                down_block_additional_residuals=down,
                mid_block_additional_residual=mid,
                return_dict=False,
            )[0]
            if rows is not None:
                # Cancelled jobs' rows stay in the (small) latent batch for the scheduler's
                # state, but no network runs for them.
                full = torch.zeros_like(model_input)
                noise_pred = full.index_copy(0, rows, noise_pred)
            if cfg:
                uncond, text = noise_pred.chunk(2)
                noise_pred = uncond + guidance * (text - uncond)

            before = latents
            result = scheduler.step(noise_pred, t, latents, **step_kwargs)
            latents = result.prev_sample
            if inpaint is not None:
                # Keep the unmasked area on the init image's own noising trajectory, as
                # diffusers' StableDiffusionControlNetInpaintPipeline does for 4-channel UNets.
                proper = inpaint.image_latents
                if i < total - 1:
                    proper = scheduler.add_noise(
                        proper, inpaint.noise, torch.tensor([timesteps[i + 1]])
                    )
                latents = (1 - inpaint.mask) * proper + inpaint.mask * latents
            self._report(jobs, live, i + 1, total, scheduler, result, before, noise_pred, t)

        # 6. Decode the jobs still wanted.
        keep = [j for j in range(batch) if live[j] and not jobs[j].cancel.is_set()]
        if not keep:
            return [None] * batch
        denoised = _sync_time(device)
        images = self._decode(latents[keep])
        for k, j in enumerate(keep):
            if jobs[j].mask is not None:
                # Outside the mask, the init image's own pixels: the VAE round trip would
                # otherwise shift every pixel slightly.
                soft = jobs[j].mask[:, :, None]
                images[k] = jobs[j].init_image * (1 - soft) + images[k] * soft
        finished = _sync_time(device)
        outputs: list[Output | None] = [None] * batch
        for image, j in zip(images, keep):
            outputs[j] = Output(
                image=image,
                seed=jobs[j].seed,
                prepare_ms=(prepared - started) * 1000,
                denoise_ms=(denoised - prepared) * 1000,
                decode_ms=(finished - denoised) * 1000,
                batch_size=batch,
                steps=total,
            )
        return outputs

    # -- pieces of the run -------------------------------------------------------------------

    def _prepare_unit(self, jobs: list[Job], slot: int, cfg: bool) -> _Unit:
        models = self.models
        device, dtype = models.device, models.dtype
        net = models.controls[jobs[0].controls[slot].model].model
        batch = len(jobs)
        residuals = len(net.controlnet_down_blocks) + 1

        # Which rows each job's unit conditions: both guidance halves, or in control mode
        # only the prompt half (diffusers' guess mode gives the other half zeros).
        entries = []  # (row, job index)
        for j, job in enumerate(jobs):
            unit = job.controls[slot]
            if cfg and unit.mode != "control":
                entries.append((j, j))
            entries.append((batch + j if cfg else j, j))
        entries.sort()
        rows = [row for row, _ in entries]
        owners = [j for _, j in entries]

        images = torch.cat(
            [initial.to_tensor(jobs[j].controls[slot].image, device, dtype) for j in owners]
        )
        if net.config.controlnet_conditioning_channel_order == "bgr":
            images = torch.flip(images, dims=[1])
        hint = net.controlnet_cond_embedding(images)

        scales = []
        for j in owners:
            unit = jobs[j].controls[slot]
            if unit.mode == "control":
                # Exactly diffusers' guess-mode scales: logspace on the device, times weight.
                profile = torch.logspace(-1, 0, residuals, device=device) * unit.weight
            elif unit.mode == "prompt":
                decay = [PROMPT_MODE_DECAY ** (residuals - 1 - k) for k in range(residuals)]
                profile = torch.tensor(decay, device=device) * unit.weight
            else:
                profile = torch.full((residuals,), unit.weight, device=device)
            scales.append(profile)
        return _Unit(
            net=net,
            rows=torch.tensor(rows, device=device),
            jobs=owners,
            windows=[(jobs[j].controls[slot].start, jobs[j].controls[slot].end) for j in owners],
            hint=hint,
            scales=torch.stack(scales).to(dtype),
        )

    def _control_residuals(self, units, live, step, total, model_input, t, embeds):
        """Sum of every active unit's scaled residuals over the full UNet batch, or (None,
        None) when no unit is active at this step."""
        down, mid = None, None
        rows_total = model_input.shape[0]
        for unit in units:
            # diffusers' controlnet_keep: a unit acts at step i unless i/n < start or
            # (i+1)/n > end; here an inactive unit is not run at all.
            active = [
                live[j] and not (step / total < start or (step + 1) / total > end)
                for j, (start, end) in zip(unit.jobs, unit.windows)
            ]
            if not any(active):
                continue
            if all(active):
                rows, picked = unit.rows, None
            else:
                picked = torch.tensor([k for k, a in enumerate(active) if a], device=t.device)
                rows = unit.rows.index_select(0, picked)
            full = len(rows) == rows_total
            sample = model_input if full else model_input.index_select(0, rows)
            context = embeds if full else embeds.index_select(0, rows)
            unit_down, unit_mid = controlnet.forward(
                unit.net, sample, t, context, _take(unit.hint, picked)
            )
            scales = _take(unit.scales, picked)
            unit_down = [r * scales[:, k].view(-1, 1, 1, 1) for k, r in enumerate(unit_down)]
            unit_mid = unit_mid * scales[:, -1].view(-1, 1, 1, 1)
            if not full:
                # Rows this unit does not condition get zeros, like diffusers' guess mode.
                unit_down = [_scatter(r, rows, rows_total) for r in unit_down]
                unit_mid = _scatter(unit_mid, rows, rows_total)
            if down is None:
                down, mid = unit_down, unit_mid
            else:
                down = [a + b for a, b in zip(down, unit_down)]
                mid = mid + unit_mid
        return down, mid

    def _report(self, jobs, live, step, total, scheduler, result, before, noise_pred, t):
        for j, job in enumerate(jobs):
            if not live[j] or job.on_progress is None:
                continue
            preview = None
            due = job.preview != "none" and (step % job.preview_every == 0 or step == total)
            if due:
                x0 = getattr(result, "pred_original_sample", None)
                if x0 is None:
                    x0 = schedulers.predict_x0(scheduler, before, noise_pred, t)
                preview = self._preview(x0[j : j + 1], job.preview)
            job.on_progress(step, total, preview)

    def _preview(self, x0: torch.Tensor, mode: str) -> np.ndarray:
        if mode == "fast":
            rgb = torch.einsum("bchw,cr->bhwr", x0, self._latent_rgb)
            return ((rgb + 1) / 2).clamp(0, 1)[0].float().cpu().numpy()
        return self._decode(x0)[0]

    def _decode(self, latents: torch.Tensor) -> list[np.ndarray]:
        vae = self.models.vae
        images = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
        images = (images / 2 + 0.5).clamp(0, 1)
        return list(images.permute(0, 2, 3, 1).float().cpu().numpy())


def _rows(live: list[bool], cfg: bool, device) -> torch.Tensor:
    batch = len(live)
    rows = [j for j in range(batch) if live[j]]
    if cfg:
        rows += [batch + j for j in range(batch) if live[j]]
    return torch.tensor(rows, device=device)


def _take(tensor: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    return tensor if index is None else tensor.index_select(0, index)


def _scatter(values: torch.Tensor, rows: torch.Tensor, total: int) -> torch.Tensor:
    zeros = values.new_zeros((total, *values.shape[1:]))
    return zeros.index_add(0, rows, values)


def _sync_time(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _describe(image: np.ndarray) -> str:
    height, width = image.shape[:2]
    channels = image.shape[2] if image.ndim == 3 else 1
    return f"{width}x{height} with {channels} channel(s)"


def _wxh(job: Job) -> str:
    return f"{job.width}x{job.height}"


def _square(pixels: int) -> str:
    side = int(pixels**0.5) // 8 * 8
    return f"{side}x{side}"
