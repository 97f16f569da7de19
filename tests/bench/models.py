"""First-use model load time: Tether's registry vs diffusers' own loaders, same files.

    python tests/bench/models.py                       # tiny model, CPU
    python tests/bench/models.py --full-size --device cuda --dtype float16

Writes one base model and one ControlNet as single .safetensors files (the original SD /
ControlNet layout, as A1111 and ComfyUI keep them) and as diffusers folders, then prints
one JSON object:
- `check_ms`: reading and checking the models file before the server listens (headers
  only, no weights).
- per layout, `tether_ms`: `ModelRegistry.load` of the base model and the ControlNet on the
  device, as a first request pays; `diffusers_ms`: the same files through
  StableDiffusionControlNetPipeline.from_single_file / from_pretrained, moved to the
  device; and their ratio. Medians of --repeats fresh loads (files in the page cache).
`--full-size` uses SD 1.5's architecture from the shipped configs (configs/sd15) with
random weights, stored as float16 like the usual _fp16 files: the shipped configs and
tokenizer are then what builds the model (needs ~8 GB of memory and 2.5 GB of disk).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
from diffusers.utils import logging as diffusers_logging

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import model_files  # noqa: E402
from tether_server import catalog, models  # noqa: E402
from tether_server.registry import ModelRegistry  # noqa: E402


def full_size_sd15() -> models.ModelSet:
    """SD 1.5 built from the shipped configs, random weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    def config(part: str) -> dict:
        return json.loads((catalog.SD15_CONFIGS / part / "config.json").read_text())

    control = ControlNetModel.from_config(config("controlnet"))
    return models.ModelSet(
        name="sd15-random",
        unet=UNet2DConditionModel.from_config(config("unet")),
        vae=AutoencoderKL.from_config(config("vae")),
        text_encoder=CLIPTextModel(CLIPTextConfig(**config("text_encoder"))),
        tokenizer=CLIPTokenizer.from_pretrained(catalog.SD15_CONFIGS / "tokenizer"),
        scheduler_config=dict(models.SD15_SCHEDULER_CONFIG),
        controls={"canny": models.ControlNet("canny", "canny", control)},
    )


def write(model: models.ModelSet, root: Path, full_size: bool) -> dict[str, Path]:
    """The files, and a TOML naming them as models `file` and `folder`."""
    if full_size:
        model.to("cpu", torch.float16)
        configs, control_config = catalog.SD15_CONFIGS, catalog.SD15_CONFIGS / "controlnet"
    else:
        configs = model_files.configs(model, root / "configs")
        control_config = model_files.control_config(model, root / "control-config")
    model_files.single_file(model, root / "model.safetensors")
    model_files.control_file(model, "canny", root / "control_canny.safetensors")
    model_files.diffusers_folder(model, root / "model")
    model.controls["canny"].model.save_pretrained(root / "control_canny")
    toml = root / "models.toml"
    toml.write_text(
        f"""
        [models.file]
        path = "model.safetensors"
        config = "{configs}"
        [models.folder]
        path = "model"
        [controls.file]
        path = "control_canny.safetensors"
        config = "{control_config}"
        [controls.folder]
        path = "control_canny"
        kind = "canny"
        """
    )
    return {"root": root, "toml": toml, "configs": configs, "control_config": control_config}


def tether_load(entries: catalog.Catalog, layout: str, device: str, dtype: torch.dtype):
    """What a server's first request on the model (with one unit) waits for."""
    registry = ModelRegistry(entries, device=device, dtype=dtype)
    return registry.load(layout, [layout])


def diffusers_load(files: dict[str, Path], layout: str, device: str, dtype: torch.dtype):
    root = files["root"]
    if layout == "file":
        net = ControlNetModel.from_single_file(
            str(root / "control_canny.safetensors"),
            config=str(files["control_config"]),
            local_files_only=True,
            torch_dtype=dtype,
        )
        pipe = StableDiffusionControlNetPipeline.from_single_file(
            str(root / "model.safetensors"),
            config=str(files["configs"]),
            controlnet=net,
            safety_checker=None,
            feature_extractor=None,
            local_files_only=True,
            dtype=dtype,
        )
    else:
        net = ControlNetModel.from_pretrained(root / "control_canny", torch_dtype=dtype)
        pipe = StableDiffusionControlNetPipeline.from_pretrained(
            root / "model",
            controlnet=net,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
            dtype=dtype,
        )
    return pipe.to(device)


def timed(load, repeats: int, device: str) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        loaded = load()
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - started) * 1000)
        del loaded
    return round(statistics.median(times), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full-size", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    diffusers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()
    model = full_size_sd15() if args.full_size else models.tiny()
    with tempfile.TemporaryDirectory() as folder:
        files = write(model, Path(folder), args.full_size)
        del model
        started = time.perf_counter()
        entries = catalog.read(files["toml"])
        report = {
            "model": "sd15-random" if args.full_size else "tiny",
            "device": args.device,
            "dtype": args.dtype,
            "check_ms": round((time.perf_counter() - started) * 1000, 1),
        }
        for layout in ("file", "folder"):
            load = partial(tether_load, entries, layout, args.device, dtype)
            ours = timed(load, args.repeats, args.device)
            load = partial(diffusers_load, files, layout, args.device, dtype)
            theirs = timed(load, args.repeats, args.device)
            name = "single_file" if layout == "file" else "diffusers_folder"
            report[name] = {
                "tether_ms": ours,
                "diffusers_ms": theirs,
                "ratio": round(ours / theirs, 2),
            }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
