"""Live sessions vs a plain diffusers img2img ControlNet loop, on the same machine.

    python tests/bench/live.py          # tiny model, CPU: 128² and 256², 1/2/4 steps, 0/1/3 units
    python tests/bench/live.py --quick  # 128² only
    python tests/bench/live.py --device cuda --dtype float16   # both sides on the GPU

Tether: a real `tether serve` on a free port and one live session; the host sends a new
frame every --interval seconds (faster than served: stale frames are dropped) and measures
results per second and lag (frame sent -> its result received). diffusers: the same
components in this process, StableDiffusion(ControlNet)Img2ImgPipeline called frame after
frame; its lag is the call's duration. Both: strength 1 (all steps run), no classifier-free
guidance, seed fixed. Prints one JSON object; `fps_ratio` = Tether fps / diffusers fps.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import tether
import torch
from diffusers import StableDiffusionControlNetImg2ImgPipeline, StableDiffusionImg2ImgPipeline
from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel
from tether_server import models, schedulers

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from scene import render  # noqa: E402

UNITS = ("depth", "normal", "canny")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def frames(size: int, count: int) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    """A camera moving sideways over the numpy scene: colour, depth map, normal map, edges."""
    depth, normals = render(size + count, size)
    out = []
    for k in range(count):
        d, n = depth[:, k : k + size], normals[:, k : k + size]
        depth_map = tether.maps.depth_from_linear(d, far=100)
        normal_map = tether.maps.normals_from_view(n)
        colour = (normal_map * 200).astype(np.uint8)
        edges = np.zeros_like(depth_map)
        edges[:, 1:] = np.abs(np.diff(depth_map, axis=1)) > 0.05
        out.append((colour, [depth_map, normal_map, edges.astype(np.float32)]))
    return out


def tether_run(address: str, size: int, steps: int, units: int, seconds: float, interval: float):
    controls = [tether.Control(name, None) for name in UNITS[:units]]
    config = tether.LiveConfig("a toy town", controls=controls, steps=steps, strength=1.0)
    inputs = frames(size, 64)
    sent_at: dict[int, float] = {}
    received: list[tuple[float, tether.LiveResult]] = []
    with tether.Client(address) as client, client.live(config) as session:
        # Results are read on their own thread while this one sends, as a game loop would.
        reader = threading.Thread(
            target=lambda: received.extend((time.perf_counter(), e) for e in session), daemon=True
        )
        reader.start()
        session.send(tether.LiveFrame(1, inputs[0][0], inputs[0][1][:units]))
        while not received:  # warm-up frame
            time.sleep(0.005)
        started = time.perf_counter()
        frame_id = 1
        while time.perf_counter() - started < seconds:
            frame_id += 1
            colour, maps = inputs[frame_id % len(inputs)]
            sent_at[frame_id] = time.perf_counter()
            session.send(tether.LiveFrame(frame_id, colour, maps[:units]))
            time.sleep(interval)
        ended = time.perf_counter()
        session.close()
        reader.join(timeout=60)
    window = [(at, e) for at, e in received[1:] if at <= ended]
    lags = [at - sent_at[e.frame_id] for at, e in window]
    return {
        "fps": round(len(window) / (ended - started), 2),
        "lag_ms": round(statistics.median(lags) * 1000, 1) if lags else None,
        "frames_sent": frame_id - 1,
        "dropped": received[-1][1].dropped,
    }


def diffusers_run(pipe, size: int, steps: int, units: int, seconds: float):
    inputs = frames(size, 64)
    lags = []
    started = time.perf_counter()
    k = 0
    while time.perf_counter() - started < seconds or k < 2:
        colour, maps = inputs[k % len(inputs)]
        call_started = time.perf_counter()
        kwargs = {}
        if units:
            control = [torch.from_numpy(m).permute(2, 0, 1)[None] for m in maps[:units]]
            kwargs["control_image"] = control if units > 1 else control[0]
        pipe(
            prompt="a toy town",
            image=torch.from_numpy(colour.astype(np.float32) / 255).permute(2, 0, 1)[None],
            strength=1.0,
            num_inference_steps=steps,
            guidance_scale=1.0,
            height=size,
            width=size,
            generator=torch.Generator("cpu").manual_seed(0),
            output_type="np",
            **kwargs,
        )
        lags.append(time.perf_counter() - call_started)
        k += 1
    elapsed = time.perf_counter() - started
    return {"fps": round(k / elapsed, 2), "lag_ms": round(statistics.median(lags) * 1000, 1)}


def pipelines(tiny, device: str, dtype: torch.dtype):
    common = dict(
        vae=tiny.vae,
        text_encoder=tiny.text_encoder,
        tokenizer=tiny.tokenizer,
        unet=tiny.unet,
        scheduler=schedulers.create("euler", tiny.scheduler_config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    nets = [tiny.controls[name].model for name in UNITS]
    made = {0: StableDiffusionImg2ImgPipeline(**common)}
    made[1] = StableDiffusionControlNetImg2ImgPipeline(controlnet=nets[0], **common)
    made[3] = StableDiffusionControlNetImg2ImgPipeline(
        controlnet=MultiControlNetModel(nets), **common
    )
    for pipe in made.values():
        pipe.to(device, dtype)
        pipe.set_progress_bar_config(disable=True)
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="128x128 only")
    parser.add_argument("--seconds", type=float, default=3.0, help="per setting and side")
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between frames")
    parser.add_argument("--device", default="cpu", help="torch device of both sides")
    parser.add_argument("--dtype", default="float32", choices=("float16", "bfloat16", "float32"))
    args = parser.parse_args()
    port = free_port()
    serve = ["tether", "serve", "--port", str(port), "--device", args.device, "--dtype", args.dtype]
    server = subprocess.Popen([sys.executable, "-m", *serve], stderr=subprocess.DEVNULL)
    address = f"127.0.0.1:{port}"
    try:
        with tether.Client(address) as client:
            while True:
                try:
                    client.models(timeout=1)
                    break
                except tether.Unavailable:
                    time.sleep(0.2)
        pipes = pipelines(models.tiny(), args.device, getattr(torch, args.dtype))
        rows = []
        for size in (128,) if args.quick else (128, 256):
            for steps in (1, 2, 4):
                for units in (0, 1, 3):
                    ours = tether_run(address, size, steps, units, args.seconds, args.interval)
                    theirs = diffusers_run(pipes[units], size, steps, units, args.seconds)
                    rows.append(
                        {
                            "size": size,
                            "steps": steps,
                            "units": units,
                            "tether": ours,
                            "diffusers": theirs,
                            "fps_ratio": round(ours["fps"] / theirs["fps"], 3),
                        }
                    )
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    finally:
        server.terminate()
        server.wait(timeout=60)
    ratios = [row["fps_ratio"] for row in rows]
    print(
        json.dumps(
            {
                "benchmark": "live",
                "model": "tiny",
                "device": args.device,
                "dtype": args.dtype,
                "torch": torch.__version__,
                "seconds_per_setting": args.seconds,
                "frame_interval_s": args.interval,
                "fps_ratio_median": round(statistics.median(ratios), 3),
                "fps_ratio_min": min(ratios),
                "settings": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
