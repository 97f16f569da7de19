"""Fast denoising: the networks of a step, captured once per shape bucket.

`tether serve --fast [graphs|compile]` trades bit-exactness with diffusers for speed. The
exact mode (no `--fast`) stays the default: it is what the parity tests hold bit for bit.
In fast mode:
- on CUDA, the UNet and the ControlNets run in channels-last memory format with cuDNN's
  autotuner on; the dtype is the server's (float16 on a GPU), and attention goes through
  PyTorch's scaled_dot_product_attention (diffusers' default processor), which picks the
  flash or memory-efficient kernel;
- `graphs` (CUDA only): a step — every active ControlNet, the scaling and sum of their
  residuals, the UNet — is captured as one CUDA graph per bucket and replayed, one launch
  instead of some two thousand kernels issued from Python;
- `compile`: the UNet's and the ControlNets' forward passes are compiled by torch.compile
  (inductor) once per input shape, and on CUDA the step is then captured as above. It runs
  on the CPU too, without graphs.
A bucket is what a captured step depends on: the networks, the rows (jobs x guidance
halves), the latent size, the units active at the step, the timestep's shape. It is
captured on first use, so the first job of a new size or unit set pays for it: about a
second for graphs, a minute or more per new shape for compile. `compile_s` totals it.

A step that conditions only some rows (a unit in `control` mode under guidance, jobs of a
batch whose windows differ, a cancelled job) runs eagerly, as in exact mode. A change of
model set, of active LoRAs or of seamless tiling (which change the networks in place)
forgets every capture (`use`): alternating between them captures again each time.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import torch

from . import controlnet

MODES = ("graphs", "compile")
DEFAULT_MODE = "graphs"
# Every bucket is its own compiled graph: raise dynamo's default of 8 per function.
RECOMPILE_LIMIT = 64


def unet_forward(unet, sample, t, context, cond, down, mid) -> torch.Tensor:
    """The UNet call of a step, as diffusers' pipelines make it."""
    return unet(
        sample,
        t,
        encoder_hidden_states=context,
        timestep_cond=cond,
        down_block_additional_residuals=down,
        mid_block_additional_residual=mid,
        return_dict=False,
    )[0]


def network_step(
    unet: torch.nn.Module,
    nets: list[torch.nn.Module],
    sample: torch.Tensor,
    t: torch.Tensor,
    context: torch.Tensor,
    hints: list[torch.Tensor],
    scales: list[torch.Tensor],
    cond: torch.Tensor | None,
    run_unet: Callable = unet_forward,
    run_controlnet: Callable = controlnet.forward,
) -> torch.Tensor:
    """The networks of one step when every unit conditions every row: the same operations,
    in the same order, as the engine's exact loop."""
    down, mid = None, None
    for net, hint, scale in zip(nets, hints, scales):
        unit_down, unit_mid = controlnet.residuals(
            net, sample, t, context, hint, scale, run_controlnet
        )
        if down is None:
            down, mid = unit_down, unit_mid
        else:
            down = [a + b for a, b in zip(down, unit_down)]
            mid = mid + unit_mid
    return run_unet(unet, sample, t, context, cond, down, mid)


class Fast:
    """The fast mode of one engine (see the module docstring)."""

    def __init__(self, device: torch.device, mode: str, backend: str = "inductor") -> None:
        """`backend` is torch.compile's; tests trace with "eager" to check for graph
        breaks without inductor's compile time."""
        if mode not in MODES:
            raise ValueError(f"fast mode must be one of {', '.join(MODES)} (got {mode!r})")
        self.graphs = device.type == "cuda"
        if mode == "graphs" and not self.graphs:
            raise RuntimeError(  # a device problem: a worker's startup error
                f"--fast graphs needs a CUDA device (got {device.type}); "
                "--fast compile also runs on the CPU"
            )
        self.mode = mode
        self.compile_s = 0.0  # time spent capturing or compiling buckets
        self._buckets: dict[tuple, Callable[[list], torch.Tensor]] = {}
        # The model set and the networks' state the buckets were captured for.
        self._models: object = None
        self._state: tuple = ()
        self._channels_last: set[int] = set()
        self._run_unet, self._run_controlnet = unet_forward, controlnet.forward
        if mode == "compile":
            torch._dynamo.config.recompile_limit = RECOMPILE_LIMIT
            compile = functools.partial(
                torch.compile, backend=backend, fullgraph=True, dynamic=False
            )
            self._run_unet = compile(unet_forward)
            self._run_controlnet = compile(controlnet.forward)
        if self.graphs:
            torch.backends.cudnn.benchmark = True
            self._pool = torch.cuda.graph_pool_handle()

    @property
    def buckets(self) -> int:
        return len(self._buckets)

    def reset(self) -> None:
        """Forget every captured bucket (they are captured again on next use)."""
        self._buckets.clear()

    def use(self, models: object, state: tuple = ()) -> None:
        """The engine runs on the model set `models` with its networks in `state` (the
        active LoRAs and their weights, the seamless tiling) now. A change forgets every
        bucket: captures hold the networks as they were (the LoRA layers and scales, the
        convolutions' padding), the registry may be unloading the old model set, and bucket
        keys name networks by id, which a freed network's successor can reuse."""
        if models is not self._models or state != self._state:
            self.reset()
            self._models, self._state = models, state

    def step(self, unet, units, step, total, sample, t, context, cond) -> torch.Tensor | None:
        """The engine loop's noise prediction for step `step` of `total` over `units`
        (engine._Unit), or None where the step must run eagerly (some unit conditions only
        some rows)."""
        active = []
        for unit in units:
            acting = [controlnet.acts(step, total, start, end) for start, end in unit.windows]
            if not any(acting):
                continue
            if not all(acting) or len(unit.rows) != sample.shape[0]:
                return None
            active.append(unit)
        return self.run(
            unet,
            [unit.net for unit in active],
            sample,
            t,
            context,
            [unit.hint for unit in active],
            [unit.scales for unit in active],
            cond,
        )

    def run(self, unet, nets, sample, t, context, hints, scales, cond) -> torch.Tensor:
        """`network_step` through this bucket's capture, made on first use."""
        inputs = [sample, t, context, cond, *hints, *scales]
        key = (
            id(unet),
            tuple(id(net) for net in nets),
            tuple(None if x is None else (x.shape, x.dtype) for x in inputs),
        )
        bucket = self._buckets.get(key)
        if bucket is not None:
            return bucket(inputs)
        started = time.perf_counter()
        step = functools.partial(self._step, unet, nets)
        if self.graphs:
            self._to_channels_last([unet, *nets])
            bucket = _Graph(step, inputs, self._pool)
            output = bucket(inputs)
        else:
            bucket = step
            output = step(inputs)
        self._buckets[key] = bucket
        self.compile_s += time.perf_counter() - started
        return output

    def _step(self, unet, nets, inputs: list) -> torch.Tensor:
        sample, t, context, cond, *rest = inputs
        hints, scales = rest[: len(nets)], rest[len(nets) :]
        return network_step(
            unet,
            nets,
            sample,
            t,
            context,
            hints,
            scales,
            cond,
            self._run_unet,
            self._run_controlnet,
        )

    def _to_channels_last(self, modules: list[torch.nn.Module]) -> None:
        for module in modules:
            if id(module) not in self._channels_last:
                module.to(memory_format=torch.channels_last)
                self._channels_last.add(id(module))


class _Graph:
    """One bucket on CUDA: `step` captured as a CUDA graph over static input buffers."""

    def __init__(self, step: Callable[[list], torch.Tensor], inputs: list, pool) -> None:
        self.inputs = [_static(x) for x in inputs]
        # Warm up on a side stream first (cuDNN autotuning, cuBLAS workspaces, and for
        # compile mode the compilation itself), as torch.cuda.graphs asks.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                step(self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool, capture_error_mode="thread_local"):
            self.output = step(self.inputs)

    def __call__(self, inputs: list) -> torch.Tensor:
        for static, x in zip(self.inputs, inputs):
            if static is not None:
                static.copy_(x)
        self.graph.replay()
        # The next replay overwrites the output buffer; the loop keeps the noise prediction
        # past that only for previews, but a copy costs one small kernel.
        return self.output.clone()


def _static(x: torch.Tensor | None) -> torch.Tensor | None:
    if x is None:
        return None
    if x.dim() == 4:
        return x.clone(memory_format=torch.channels_last)
    return x.clone()
