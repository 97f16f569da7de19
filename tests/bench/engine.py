"""Engine vs diffusers' StableDiffusionControlNetPipeline, same process, same components.

    python tests/bench/engine.py                      # tiny model, CPU, 256x256, 20 steps
    python tests/bench/engine.py --full-size --size 512 --device cuda --dtype float16 \
        --units 1,3 --fast graphs,compile --only-plain    # what tests/bench/gpu.sh runs

Prints one JSON object. Times are medians of --repeats runs after one warm-up run each.
- `plain`: --units units (default 3) on every step, exact mode, one row per unit count.
  Target: engine <= 1.02x diffusers. With --fast graphs,compile each row also times
  those fast modes (compiled.py) and checks them against exact mode's image: at most
  4/255 per pixel (`within_4_255`); `first_run_s` includes the capture. graphs needs CUDA.
- `windowed`: 2 of the 3 units limited to the first half of the steps. diffusers still runs
  them (at weight 0); the engine skips them. Target: clearly faster than diffusers.
- `batch4`: 4 compatible jobs through one loop vs the same 4 one after another.
- `preview_fast`: cost of a fast preview every step, as a share of the step time.
`--full-size` builds SD 1.5's architecture with random weights (speed does not depend on
weights); the default is the embedded tiny model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from diffusers import StableDiffusionControlNetPipeline
from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel
from random_models import UNITS, full_size_sd15
from tether_server import compiled, models, schedulers
from tether_server.engine import ControlInput, Engine, Job

# Fast mode's promise: within 4/255 of exact mode per pixel (compiled.py).
FAST_TOLERANCE = 4 / 255


def timed_ms(run, device: torch.device) -> float:
    """One call of `run`, in ms, waiting for the device's queued work on both sides."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) * 1000


def median_time(run, repeats: int, device: torch.device) -> float:
    """Median seconds of `repeats` calls after a warm-up call (kernels, allocator, caches)."""
    run()
    return statistics.median(timed_ms(run, device) for _ in range(repeats)) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--full-size", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--units", default="3", help="unit counts of `plain`, e.g. 1,3")
    parser.add_argument(
        "--fast", default="", help=f"fast modes measured beside exact: {','.join(compiled.MODES)}"
    )
    parser.add_argument(
        "--compile-backend",
        default="inductor",
        help="torch.compile's backend for --fast compile (eager: trace only, a CPU smoke test)",
    )
    parser.add_argument(
        "--only-plain", action="store_true", help="skip windowed, batch4 and preview_fast"
    )
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    unit_counts = [int(n) for n in args.units.split(",")]
    fast_modes = [mode for mode in args.fast.split(",") if mode]
    model_set = full_size_sd15(args.device, dtype) if args.full_size else models.tiny()
    model_set.to(args.device, dtype)
    device = model_set.device
    engine = Engine(model_set, max_pixels=args.size * args.size)
    rng = np.random.default_rng(0)
    maps = [rng.random((args.size, args.size, 3), dtype=np.float32) for _ in UNITS]
    control_tensors = [torch.from_numpy(m).permute(2, 0, 1)[None] for m in maps]
    weights = [1.0, 0.8, 0.6]

    def pipeline(units: int) -> StableDiffusionControlNetPipeline:
        nets = [model_set.controls[n].model for n in UNITS[:units]]
        pipe = StableDiffusionControlNetPipeline(
            vae=model_set.vae,
            text_encoder=model_set.text_encoder,
            tokenizer=model_set.tokenizer,
            unet=model_set.unet,
            controlnet=MultiControlNetModel(nets) if units > 1 else nets[0],
            scheduler=schedulers.create("unipc", model_set.scheduler_config),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    pipes = {n: pipeline(n) for n in {*unit_counts, len(UNITS)}}

    def diffusers_run(ends):
        n = len(ends)

        def per_unit(values):
            return list(values[:n]) if n > 1 else values[0]

        return pipes[n](
            prompt="a castle on a hill",
            negative_prompt="blurry",
            image=per_unit(control_tensors),
            num_inference_steps=args.steps,
            height=args.size,
            width=args.size,
            generator=torch.Generator("cpu").manual_seed(0),
            controlnet_conditioning_scale=per_unit(weights),
            control_guidance_start=per_unit([0.0] * n),
            control_guidance_end=per_unit(ends),
            output_type="np",
        ).images[0]

    def job(ends, seed=0, preview="none") -> Job:
        return Job(
            prompt="a castle on a hill",
            negative_prompt="blurry",
            seed=seed,
            steps=args.steps,
            guidance_scale=7.5,  # diffusers' default, as the pipeline runs
            width=args.size,
            height=args.size,
            controls=[
                ControlInput(n, m, w, 0.0, e) for n, m, w, e in zip(UNITS, maps, weights, ends)
            ],
            preview=preview,
            on_progress=(lambda *_: None) if preview != "none" else None,
        )

    def timed(run) -> float:
        return median_time(run, args.repeats, device)

    # 1. Exact mode against diffusers, unit count by unit count. (Fast mode comes after:
    # it switches the shared networks to channels-last and turns on cuDNN's autotuner.)
    plain, exact_images = [], {}
    for n in unit_counts:
        ends = [1.0] * n
        exact_images[n] = engine.run([job(ends)])[0].image
        reference = timed(lambda e=ends: diffusers_run(e))
        ours = timed(lambda e=ends: engine.run([job(e)]))
        plain.append(
            {
                "units": n,
                "diffusers_s": round(reference, 4),
                "engine_s": round(ours, 4),
                "engine_over_diffusers": round(ours / reference, 4),
                "diffusers_steps_per_s": round(args.steps / reference, 2),
                "engine_steps_per_s": round(args.steps / ours, 2),
                # bit-exact in float32; fp16 rounds per-unit weights apart
                "max_abs_diff_vs_diffusers": float(
                    np.abs(exact_images[n] - diffusers_run(ends)).max()
                ),
            }
        )
    results = {"plain": plain}
    if not args.only_plain:
        results.update(exact_extras(engine, job, diffusers_run, timed))

    # 2. Fast modes: the first run of a shape captures its buckets (first_run_s).
    for mode in fast_modes:
        fast = Engine(model_set, max_pixels=args.size * args.size)
        fast.fast = compiled.Fast(device, mode, backend=args.compile_backend)
        for row in plain:
            n, ends = row["units"], [1.0] * row["units"]
            started = time.perf_counter()
            image = fast.run([job(ends)])[0].image
            first = time.perf_counter() - started
            ours = timed(lambda e=ends, f=fast: f.run([job(e)]))
            diff = float(np.abs(image - exact_images[n]).max())
            row[mode] = {
                "engine_s": round(ours, 4),
                "steps_per_s": round(args.steps / ours, 2),
                "speedup_vs_diffusers": round(row["diffusers_s"] / ours, 3),
                "speedup_vs_exact": round(row["engine_s"] / ours, 3),
                "first_run_s": round(first, 2),
                "max_abs_diff_vs_exact_255": round(diff * 255, 3),
                "within_4_255": diff <= FAST_TOLERANCE,
            }
        results[f"{mode}_capture_s_total"] = round(fast.fast.compile_s, 2)
        results[f"{mode}_buckets"] = fast.fast.buckets
    print(
        json.dumps(
            {
                "benchmark": "engine",
                "model": model_set.name,
                "device": str(device),
                "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                "dtype": args.dtype,
                "size": args.size,
                "steps": args.steps,
                "repeats": args.repeats,
                "torch": torch.__version__,
                **results,
            },
            indent=2,
        )
    )


def exact_extras(engine: Engine, job, diffusers_run, timed) -> dict:
    """Exact mode with every unit: windows, batching, previews."""
    every_step, half = [1.0] * len(UNITS), [1.0, 0.5, 0.5]
    reference = timed(lambda: diffusers_run(half))
    ours = timed(lambda: engine.run([job(half)]))
    results = {
        "windowed": {
            "diffusers_s": round(reference, 4),
            "engine_s": round(ours, 4),
            "engine_over_diffusers": round(ours / reference, 4),
            "max_abs_diff_vs_diffusers": float(
                np.abs(engine.run([job(half)])[0].image - diffusers_run(half)).max()
            ),
        }
    }
    one_by_one = timed(lambda: [engine.run([job(every_step, seed=k)]) for k in range(4)])
    batched = timed(lambda: engine.run([job(every_step, seed=k) for k in range(4)]))
    results["batch4"] = {
        "sequential_s": round(one_by_one, 4),
        "batched_s": round(batched, 4),
        "throughput_gain": round(one_by_one / batched, 4),
    }
    plain_s = timed(lambda: engine.run([job(every_step)]))
    previewed = timed(lambda: engine.run([job(every_step, preview="fast")]))
    results["preview_fast"] = {
        "engine_s": round(previewed, 4),
        "share_of_step_time": round((previewed - plain_s) / plain_s, 4),
    }
    return results


if __name__ == "__main__":
    main()
