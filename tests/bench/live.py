"""Live sessions through gRPC vs a plain diffusers img2img ControlNet loop, one machine.

    python tests/bench/live.py          # tiny model, CPU: 128² and 256², 1/2/4 steps, 0/1/3 units
    python tests/bench/live.py --quick  # 128² only
    python tests/bench/live.py --full-size --device cuda --dtype float16   # what gpu.py runs

Tether: a real `tether serve` per variant on a free port and one live session per setting;
the host sends a new frame every --interval seconds (faster than served: stale frames are
dropped) and measures results per second and lag (frame sent -> the result naming it
received). Variants (servers): `exact`; `fast` (--fast graphs, CUDA only); `stream`
(--stream-batch, plus --fast graphs on CUDA). diffusers: the same components in this
process, StableDiffusion(ControlNet)Img2ImgPipeline called frame after frame; its lag is
the call's duration. Both: the lcm scheduler, no classifier-free guidance, seed fixed.
- tiny (default): strength 1 (all steps run); the depth unit gets a ready depth map.
- --full-size: SD 1.5's architecture with random weights, a depth ControlNet and a tiny
  autoencoder (TAESD, both sides), served from files; 512², 4 steps at strength 0.5 and
  1 step; the depth unit gets the renderer's linear depth buffer (float32), converted on
  the server. Targets on a GPU: 4 steps >= 50 fps with lag <= 60 ms, 1 step >= 100 fps.
Prints one JSON object; `fps_ratio` = Tether fps / diffusers fps, per variant.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import random_models
import tether
import torch
from diffusers import StableDiffusionControlNetImg2ImgPipeline, StableDiffusionImg2ImgPipeline
from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel
from tether_server import models, schedulers

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from scene import render  # noqa: E402

UNITS = ("depth", "normal", "canny")
FAR = 100.0  # the scene's background distance, as the depth buffer's `far`
WARM_UP_FRAMES = 6  # paced: a stream fills and every bucket a session uses is captured


@dataclass(frozen=True)
class Setting:
    size: int
    steps: int
    strength: float
    units: int


@dataclass
class Frame:
    colour: np.ndarray  # uint8 RGB
    depth_buffer: np.ndarray  # float32 linear view depth
    maps: list[np.ndarray]  # depth, normal and edge maps, float32 RGB in [0, 1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def frames(size: int, count: int) -> list[Frame]:
    """A camera moving sideways over the numpy scene."""
    depth, normals = render(size + count, size)
    out = []
    for k in range(count):
        d, n = depth[:, k : k + size], normals[:, k : k + size]
        depth_map = tether.maps.depth_from_linear(d, far=FAR)
        normal_map = tether.maps.normals_from_view(n)
        edges = np.zeros_like(depth_map)
        edges[:, 1:] = np.abs(np.diff(depth_map, axis=1)) > 0.05
        colour = (normal_map * 200).astype(np.uint8)
        out.append(Frame(colour, np.ascontiguousarray(d), [depth_map, normal_map, edges]))
    return out


def tether_run(address: str, setting: Setting, seconds: float, interval: float, buffer: bool):
    """One live session; `buffer`: the depth unit gets the float depth buffer."""
    controls = [tether.Control(name, None) for name in UNITS[: setting.units]]
    if buffer and setting.units:
        controls[0] = tether.Control("depth", None, preprocessor=tether.Depth(far=FAR))
    config = tether.LiveConfig(
        "a toy town",
        controls=controls,
        steps=setting.steps,
        strength=setting.strength,
        scheduler="lcm",
    )
    inputs = frames(setting.size, 64)

    def live_frame(frame_id: int) -> tether.LiveFrame:
        frame = inputs[frame_id % len(inputs)]
        maps = [frame.depth_buffer if buffer else frame.maps[0], *frame.maps[1:]]
        return tether.LiveFrame(frame_id, frame.colour, maps[: setting.units])

    sent_at: dict[int, float] = {}
    received: list[tuple[float, tether.LiveResult]] = []
    with tether.Client(address) as client, client.live(config) as session:
        for frame_id in range(1, WARM_UP_FRAMES + 1):
            session.send(live_frame(frame_id))
            event = next(iter(session))
            assert isinstance(event, tether.LiveResult), event
        # Results are read on their own thread while this one sends, as a game loop would.
        reader = threading.Thread(
            target=lambda: received.extend((time.perf_counter(), e) for e in session), daemon=True
        )
        reader.start()
        started = time.perf_counter()
        frame_id = WARM_UP_FRAMES
        while time.perf_counter() - started < seconds:
            frame_id += 1
            sent_at[frame_id] = time.perf_counter()
            session.send(live_frame(frame_id))
            time.sleep(interval)
        ended = time.perf_counter()
        session.close()
        reader.join(timeout=60)
    window = [(at, e) for at, e in received if at <= ended and e.frame_id in sent_at]
    lags = [at - sent_at[e.frame_id] for at, e in window]
    return {
        "fps": round(len(window) / (ended - started), 2),
        "lag_ms": round(statistics.median(lags) * 1000, 1) if lags else None,
        "frames_sent": frame_id - WARM_UP_FRAMES,
        "dropped": received[-1][1].dropped if received else None,
    }


def diffusers_run(pipe, setting: Setting, seconds: float):
    inputs = frames(setting.size, 64)
    lags = []
    started = time.perf_counter()
    k = 0
    while time.perf_counter() - started < seconds or k < 2:
        frame = inputs[k % len(inputs)]
        call_started = time.perf_counter()
        kwargs = {}
        if setting.units:
            control = [torch.from_numpy(m).permute(2, 0, 1)[None] for m in frame.maps]
            kwargs["control_image"] = control[: setting.units] if setting.units > 1 else control[0]
        pipe(
            prompt="a toy town",
            image=torch.from_numpy(frame.colour.astype(np.float32) / 255).permute(2, 0, 1)[None],
            strength=setting.strength,
            num_inference_steps=setting.steps,
            guidance_scale=1.0,
            height=setting.size,
            width=setting.size,
            generator=torch.Generator("cpu").manual_seed(0),
            output_type="np",
            **kwargs,
        )
        if pipe.device.type == "cuda":
            torch.cuda.synchronize()
        lags.append(time.perf_counter() - call_started)
        k += 1
    elapsed = time.perf_counter() - started
    return {"fps": round(k / elapsed, 2), "lag_ms": round(statistics.median(lags) * 1000, 1)}


def pipelines(model_set: models.ModelSet, unit_counts: set[int]):
    common = dict(
        vae=model_set.taesd if model_set.taesd is not None else model_set.vae,
        text_encoder=model_set.text_encoder,
        tokenizer=model_set.tokenizer,
        unet=model_set.unet,
        scheduler=schedulers.create("lcm", model_set.scheduler_config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    nets = [model_set.controls[name].model for name in UNITS if name in model_set.controls]
    made = {}
    for n in unit_counts:
        if n == 0:
            made[n] = StableDiffusionImg2ImgPipeline(**common)
        else:
            net = MultiControlNetModel(nets[:n]) if n > 1 else nets[0]
            made[n] = StableDiffusionControlNetImg2ImgPipeline(controlnet=net, **common)
        made[n].set_progress_bar_config(disable=True)
    return made


def serve(flags: list[str], device: str, dtype: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = ["tether", "serve", "--port", str(port), "--devices", device, "--dtype", dtype]
    server = subprocess.Popen([sys.executable, "-m", *command, *flags], stderr=subprocess.DEVNULL)
    address = f"127.0.0.1:{port}"
    with tether.Client(address) as client:
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"tether serve {' '.join(flags)} exited ({server.returncode})")
            try:
                client.models(timeout=1)
                return server, address
            except tether.Unavailable:
                time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model: 128x128 only")
    parser.add_argument("--full-size", action="store_true", help="see above; for a GPU")
    parser.add_argument("--seconds", type=float, default=3.0, help="per setting and side")
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between frames")
    parser.add_argument("--device", default="cpu", help="torch device of both sides")
    parser.add_argument("--dtype", default="float32", choices=("float16", "bfloat16", "float32"))
    parser.add_argument("--variants", help="servers to run (default: all the device has)")
    parser.add_argument("--steps", default="1,2,4", help="tiny model: steps of the settings")
    parser.add_argument("--units", default="0,1,3", help="tiny model: unit counts")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    fast = ["--fast", "graphs"] if cuda else []
    variants = {"exact": [], "fast": fast, "stream": ["--stream-batch", *fast]}
    if not cuda:
        del variants["fast"]  # graphs need CUDA; compiling on a CPU does not pay
    if args.variants:
        variants = {name: variants[name] for name in args.variants.split(",")}
    if args.full_size:
        full = random_models.full_size_sd15(args.device, getattr(torch, args.dtype), taesd=True)
        model_set = dataclasses.replace(full, controls={"depth": full.controls["depth"]})
        settings = [Setting(512, 4, 0.5, 1), Setting(512, 1, 1.0, 1)]
    else:
        model_set = models.tiny().to(args.device, getattr(torch, args.dtype))
        sizes = (128,) if args.quick else (128, 256)
        steps = [int(n) for n in args.steps.split(",")]
        units = [int(n) for n in args.units.split(",")]
        settings = [Setting(s, n, 1.0, u) for s in sizes for n in steps for u in units]

    with tempfile.TemporaryDirectory() as folder:
        flags = []
        if args.full_size:
            flags = ["--models", str(random_models.save(model_set, Path(folder)))]
        ours: dict[str, list[dict]] = {}
        for variant, variant_flags in variants.items():
            server, address = serve([*flags, *variant_flags], args.device, args.dtype)
            try:
                ours[variant] = []
                for setting in settings:
                    row = tether_run(address, setting, args.seconds, args.interval, args.full_size)
                    ours[variant].append(row)
                    print(json.dumps({variant: row, **vars(setting)}), file=sys.stderr, flush=True)
            finally:
                server.terminate()
                server.wait(timeout=60)
    pipes = pipelines(model_set, {setting.units for setting in settings})
    rows = []
    for k, setting in enumerate(settings):
        theirs = diffusers_run(pipes[setting.units], setting, args.seconds)
        row = {**vars(setting), "diffusers": theirs}
        for variant in variants:
            row[variant] = ours[variant][k]
        row["fps_ratio"] = {v: round(ours[v][k]["fps"] / theirs["fps"], 3) for v in variants}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    ratios = {v: [row["fps_ratio"][v] for row in rows] for v in variants}
    print(
        json.dumps(
            {
                "benchmark": "live",
                "model": "sd15-random + taesd" if args.full_size else "tiny",
                "device": args.device,
                "gpu": torch.cuda.get_device_name(args.device) if cuda else None,
                "dtype": args.dtype,
                "torch": torch.__version__,
                "scheduler": "lcm",
                "variants": {name: " ".join(flags) or "(none)" for name, flags in variants.items()},
                "seconds_per_setting": args.seconds,
                "frame_interval_s": args.interval,
                "fps_ratio_median": {v: round(statistics.median(r), 3) for v, r in ratios.items()},
                "fps_ratio_min": {v: min(r) for v, r in ratios.items()},
                "settings": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
