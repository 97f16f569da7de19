"""The `tether` command: serve, generate, models, info.

    tether serve                                   # embedded tiny model on 127.0.0.1:50051
    tether generate "a castle" --control depth=depth.png@0.8 --control canny=edges.png \\
        --steps 20 --seed 1 -o out.png --previews frames/
    tether models
    tether info

Errors print one line and exit non-zero. `serve` needs the server extra
(`pip install 'tether[server]'`); everything else needs only the SDK.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

from . import __version__, bridge, connection
from .client import Client
from .errors import TetherError
from .protocol import Canny, Control, Invert, Progress, Queued

_FORMATS_BY_SUFFIX = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}


_PREPROCESSORS = {"canny": Canny, "invert": Invert}


def parse_control(spec: str) -> Control:
    """`MODEL=PATH[@WEIGHT][:canny|:invert]` -> Control, e.g. `depth=depth.png@0.8` or
    `canny=photo.png:canny` (edges found on the server)."""
    model, sep, rest = spec.partition("=")
    if not sep or not model or not rest:
        raise argparse.ArgumentTypeError(
            f"{spec!r}: expected MODEL=PATH[@WEIGHT][:canny|:invert], e.g. depth=d.png@0.8"
        )
    preprocessor = None
    head, _, suffix = rest.rpartition(":")
    if head and suffix in _PREPROCESSORS:
        rest, preprocessor = head, _PREPROCESSORS[suffix]()
    path, _, weight = rest.rpartition("@") if "@" in rest else (rest, "", "")
    try:
        value = float(weight) if weight else 1.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"{spec!r}: weight {weight!r} is not a number") from None
    return Control(model, Path(path), weight=value, preprocessor=preprocessor)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tether", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"tether {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="generate one image")
    gen.add_argument("prompt")
    gen.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("out.png"),
        help="image file to write (.png, .jpg, .webp)",
    )
    gen.add_argument("--negative", default="", help="negative prompt")
    gen.add_argument(
        "--control",
        action="append",
        default=[],
        type=parse_control,
        metavar="MODEL=PATH[@WEIGHT][:canny|:invert]",
        help="a control unit; repeat for more. :canny finds the edges of a photo on the "
        "server; :invert turns black-on-white line art into a line map",
    )
    gen.add_argument("--steps", type=int)
    gen.add_argument("--seed", type=int)
    gen.add_argument("--guidance", type=float, help="classifier-free guidance scale")
    gen.add_argument("--width", type=int)
    gen.add_argument("--height", type=int)
    gen.add_argument("--scheduler")
    gen.add_argument("--init", type=Path, help="init image for img2img")
    gen.add_argument("--strength", type=float, help="img2img strength in (0, 1]")
    gen.add_argument("--mask", type=Path, help="inpainting mask (white = repaint), with --init")
    gen.add_argument("--mask-blur", type=float, help="mask edge blur in pixels (default 4)")
    gen.add_argument("--previews", type=Path, metavar="DIR", help="save preview frames here")
    gen.add_argument(
        "--preview",
        choices=["fast", "full"],
        default="fast",
        help="kind of preview saved with --previews",
    )
    connection.add_arguments(gen)

    for name, text in (
        ("models", "list models, control models and schedulers"),
        ("info", "show the server's version, device and limits"),
    ):
        connection.add_arguments(commands.add_parser(name, help=text))

    bridge.add_arguments(
        commands.add_parser(
            "bridge", help="WebSocket bridge for hosts without gRPC (Godot); needs tether[bridge]"
        )
    )

    train = commands.add_parser("train", help="train models (needs tether[server])")
    if importlib.util.find_spec("tether_server") is not None:
        from tether_server.train.cli import add_arguments  # options only, no torch

        add_arguments(train)

    serve = commands.add_parser("serve", help="run the server (needs tether[server])")
    serve.add_argument("--models", type=Path, help="TOML file of models (default: embedded tiny)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=50051, help="port (0: any free port)")
    serve.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    serve.add_argument(
        "--dtype",
        choices=["float16", "bfloat16", "float32"],
        help="weights' dtype (default: float16 on CUDA, float32 on CPU)",
    )
    serve.add_argument(
        "--token",
        default=os.environ.get("TETHER_TOKEN"),
        help="require 'authorization: Bearer TOKEN' (default: $TETHER_TOKEN)",
    )
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate chain for TLS")
    serve.add_argument("--tls-key", type=Path, help="PEM private key for TLS")
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback address without a token or TLS",
    )
    serve.add_argument("--max-queue", type=int, default=32, help="waiting jobs before refusing")
    serve.add_argument("--max-batch", type=int, default=4, help="jobs per denoising loop")
    serve.add_argument("--max-pixels", type=int, default=1024 * 1024, help="largest width x height")
    serve.add_argument("--max-steps", type=int, default=150, help="largest steps")
    serve.add_argument(
        "--drain-seconds",
        type=float,
        default=60.0,
        help="on SIGTERM, how long running jobs may take to finish",
    )
    return parser


def _client(args: argparse.Namespace) -> Client:
    return Client(args.server, token=args.token, tls=args.tls)


def _generate(args: argparse.Namespace) -> int:
    output_format = _FORMATS_BY_SUFFIX.get(args.output.suffix.lower())
    if output_format is None:
        raise ValueError(f"-o {args.output}: use a .png, .jpg or .webp file name")
    if args.previews:
        args.previews.mkdir(parents=True, exist_ok=True)
    bar = _ProgressBar()
    with _client(args) as client:
        stream = client.stream(
            args.prompt,
            negative_prompt=args.negative,
            controls=args.control,
            seed=args.seed,
            steps=args.steps,
            guidance_scale=args.guidance,
            width=args.width,
            height=args.height,
            scheduler=args.scheduler,
            init_image=args.init,
            strength=args.strength,
            mask=args.mask,
            mask_blur=args.mask_blur,
            preview=args.preview if args.previews else None,
            output_format=output_format,
        )

        def on_event(event: Queued | Progress) -> None:
            if isinstance(event, Queued):
                bar.queued(event.position)
                return
            bar.step(event.step, event.total)
            if event.preview is not None:
                _save_preview(event.preview, args.previews / f"step_{event.step:03d}.png")

        result = stream.result(on_event)
    bar.done()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    result.save(args.output)
    print(f"wrote {args.output} (seed {result.seed}, {result.timings.total_ms / 1000:.1f} s)")
    if args.previews:
        print(f"previews in {args.previews}/")
    return 0


def _save_preview(pixels, path: Path) -> None:
    try:
        from PIL import Image as PILImage
    except ImportError:
        raise ValueError("--previews needs pillow to write PNG files: pip install pillow") from None
    PILImage.fromarray(pixels).save(path)


class _ProgressBar:
    """One line on stderr, redrawn in place on a terminal, else printed once at the end."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()

    def queued(self, position: int) -> None:
        if self.tty:
            sys.stderr.write(f"\rqueued, {position} job(s) ahead ")

    def step(self, step: int, total: int) -> None:
        if self.tty:
            filled = round(30 * step / total)
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {step}/{total} ")

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


def _models(args: argparse.Namespace) -> int:
    with _client(args) as client:
        listing = client.models()
    for model in listing.models:
        print(
            f"model    {model.name} ({model.family}, {model.default_width}x"
            f"{model.default_height} by default)"
        )
    for control in listing.controls:
        print(f"control  {control.name} ({control.kind})")
    print(f"schedulers: {', '.join(listing.schedulers)}")
    return 0


def _info(args: argparse.Namespace) -> int:
    with _client(args) as client:
        info = client.server_info()
    limits = info.limits
    print(f"tether {info.version} on {info.device} ({info.dtype})")
    print(
        f"limits: {limits.max_pixels} pixels, {limits.max_steps} steps, "
        f"{limits.max_controls} units, queue {limits.max_queue}, batch {limits.max_batch}"
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("tether_server") is None:
        raise ValueError("tether serve needs the server extra: pip install 'tether[server]'")
    # Imported here so that the SDK never loads torch unless it is asked to serve.
    from tether_server.serve import main as serve_main

    return serve_main(args)


def _train(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("tether_server") is None:
        raise ValueError("tether train needs the server extra: pip install 'tether[server]'")
    from tether_server.train.cli import main as train_main

    return train_main(args)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = {
        "generate": _generate,
        "models": _models,
        "info": _info,
        "serve": _serve,
        "train": _train,
        "bridge": bridge.main,
    }
    try:
        return command[args.command](args)
    except TetherError as error:
        print(f"tether: {error.code.lower().replace('_', ' ')}: {error}", file=sys.stderr)
    except (ValueError, OSError) as error:
        print(f"tether: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        print("tether: interrupted", file=sys.stderr)
    return 1
