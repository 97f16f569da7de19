"""The `tether` command: serve, generate, models, info, bridge.

    tether serve                                   # embedded tiny model on 127.0.0.1:50051
    tether serve --models-dir ~/ComfyUI/models     # the models of a ComfyUI or A1111 install
    tether generate "a castle" --control depth=depth.png@0.8 --control canny=edges.png \\
        --lora detail@0.6 --model dreamshaper_8 --steps 20 --seed 1 -o out.png
    tether models
    tether info

Errors print one line and exit with status 1 (2 for a mistyped command line, and for
`serve` a models file or folder it cannot serve; Ctrl-C
cancels the job on the server, prints `tether: cancelled` and exits with 130). `serve`
needs the server extra (`pip install 'tether[server]'`); everything else needs only the SDK.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import numpy as np

from . import __version__, bridge, connection, images, protocol
from .client import Client
from .errors import Cancelled, TetherError, Unauthenticated, Unavailable
from .types import FORMATS_BY_EXTENSION, Canny, Control, Invert, Lora, Progress, Queued

_PREPROCESSORS = {"canny": Canny, "invert": Invert}
_CONTROL_SYNTAX = "MODEL=PATH[@WEIGHT][:canny|:invert]"
_INTERRUPTED = 130  # 128 + SIGINT, as shells report a command stopped by Ctrl-C


def parse_control(spec: str) -> Control:
    """`MODEL=PATH[@WEIGHT][:canny|:invert]` -> Control, e.g. `depth=depth.png@0.8` or
    `canny=photo.png:canny` (edges found on the server). The weight and the preprocessor
    may come in either order; the last `@` starts the weight."""
    model, sep, rest = spec.partition("=")
    if not sep or not model or not rest:
        raise argparse.ArgumentTypeError(
            f"{spec!r}: expected {_CONTROL_SYNTAX}, e.g. depth=d.png@0.8"
        )
    path, at, weight = rest.rpartition("@")
    if not at:
        path, weight = rest, ""
    path, before_weight = _strip_preprocessor(path)
    weight, after_weight = _strip_preprocessor(weight)
    if before_weight and after_weight:
        raise argparse.ArgumentTypeError(f"{spec!r}: one preprocessor at most: :canny or :invert")
    try:
        value = float(weight) if weight else 1.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"{spec!r}: weight {weight!r} is not a number") from None
    name = before_weight or after_weight
    preprocessor = _PREPROCESSORS[name]() if name else None
    return Control(model, Path(path), weight=value, preprocessor=preprocessor)


def parse_lora(spec: str) -> Lora:
    """`NAME[@WEIGHT]` -> Lora, e.g. `detail@0.6`; the last `@` starts the weight."""
    name, at, weight = spec.rpartition("@")
    if not at:
        return Lora(spec)
    try:
        return Lora(name, float(weight))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{spec!r}: weight {weight!r} is not a number") from None


def _strip_preprocessor(text: str) -> tuple[str, str]:
    """'photo.png:canny' -> ('photo.png', 'canny'); text without such a suffix -> (text, '')."""
    head, _, suffix = text.rpartition(":")
    if head and suffix in _PREPROCESSORS:
        return head, suffix
    return text, ""


def _size(text: str) -> int:
    """--width and --height: positive; 0 is refused rather than read as 'the default'."""
    value = int(text)
    if value == 0:
        raise argparse.ArgumentTypeError(
            "0 is not a size; leave the option out for the default (the --init image's size, "
            "else the model's)"
        )
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a positive multiple of 8 (got {value})")
    return value


def _at_least(minimum: int) -> Callable[[str], int]:
    """An option's whole number, refused below `minimum` with the option named."""

    def whole_number(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more (got {value})")
        return value

    return whole_number


def _factor(text: str) -> float:
    value = float(text)
    if not value > 1:
        raise argparse.ArgumentTypeError(f"must be over 1 (got {text}); leave it out for none")
    return value


def _seed(text: str) -> int | None:
    """-1 is a random seed, as in A1111 (None: the server draws one and reports it)."""
    value = int(text)
    if value == -1:
        return None
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"must be 0 or more, or -1 for a random seed (got {value})"
        )
    return value


class _Parser(argparse.ArgumentParser):
    """A mistyped command line, like any other error, gets one line (and status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows the defaults the CLI itself sets. Options the server fills in when left out
    have no default here, and their help says so; so does --token's, which must never
    print the token from the environment."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        unset = action.default is None or action.default is False or action.default in ("", [])
        if unset or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tether", description=__doc__.split("\n\n")[0], formatter_class=_HelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"tether {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=text, formatter_class=_HelpFormatter)

    gen = command("generate", "generate one image")
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
        "--model", help="base model, see `tether models` (default: the server's first)"
    )
    gen.add_argument(
        "--control",
        action="append",
        default=[],
        type=parse_control,
        metavar=_CONTROL_SYNTAX,
        help="a control unit; repeat for more. :canny finds the edges of a photo on the "
        "server; :invert turns black-on-white line art into a line map",
    )
    gen.add_argument(
        "--lora",
        action="append",
        default=[],
        type=parse_lora,
        metavar="NAME[@WEIGHT]",
        help="a LoRA from `tether models` (weight 1 by default); repeat for more. The "
        "prompt's <lora:NAME:WEIGHT> tags work too",
    )
    gen.add_argument("--steps", type=_at_least(1), help="denoising steps (default: the server's)")
    gen.add_argument(
        "--seed",
        type=_seed,
        help="noise seed; -1 (or leaving it out) picks a random one, printed at the end",
    )
    gen.add_argument(
        "--guidance", type=float, help="classifier-free guidance scale (default: the server's)"
    )
    size_help = (
        "output {} in pixels, a multiple of 8 (default: the --init image's, else the model's)"
    )
    gen.add_argument("--width", type=_size, help=size_help.format("width"))
    gen.add_argument("--height", type=_size, help=size_help.format("height"))
    gen.add_argument("--scheduler", help="see `tether models` (default: the server's first)")
    gen.add_argument(
        "--init",
        type=Path,
        metavar="IMAGE",
        help="init image for img2img; without --width/--height the output takes its size, "
        "its centre cropped to multiples of 8 if need be",
    )
    gen.add_argument(
        "--strength", type=float, help="img2img strength in (0, 1] (default: the server's)"
    )
    gen.add_argument(
        "--mask", type=Path, metavar="IMAGE", help="inpainting mask (white = repaint), with --init"
    )
    gen.add_argument(
        "--mask-blur", type=float, help="mask edge blur in pixels (default: the server's)"
    )
    gen.add_argument(
        "--tiling",
        choices=list(protocol.TILINGS),
        help="seamless tiling: the image wraps around left-right (x), top-bottom (y) or both",
    )
    gen.add_argument(
        "--upscale",
        type=_factor,
        metavar="FACTOR",
        help="a large image: a first pass at --width x --height, upscaled by FACTOR and "
        "refined in tiles (img2img at --strength, default: the server's)",
    )
    gen.add_argument(
        "--tile-size",
        type=_at_least(1),
        metavar="PX",
        help="side of the tiles of a large image (--upscale, or an --init over the server's "
        "pixel limit); default: the model's size",
    )
    gen.add_argument(
        "--tile-overlap",
        type=_at_least(0),
        metavar="PX",
        help="pixels neighbouring tiles overlap and cross-fade (default: a quarter of a tile)",
    )
    gen.add_argument("--previews", type=Path, metavar="DIR", help="save preview frames here")
    gen.add_argument(
        "--preview",
        choices=[mode for mode in protocol.PREVIEW_MODES if mode != "none"],
        default="fast",
        help="kind of preview saved with --previews",
    )
    connection.add_arguments(gen)

    connection.add_arguments(
        command("models", "list models, control models, LoRAs, embeddings and schedulers")
    )
    connection.add_arguments(command("info", "show the server's version, device and limits"))
    bridge.add_arguments(
        command("bridge", "WebSocket bridge for hosts without gRPC (Godot); needs tether[bridge]")
    )

    train = command("train", "train models (needs tether[server])")
    if importlib.util.find_spec("tether_server") is not None:
        from tether_server.train.cli import add_arguments  # options only, no torch

        add_arguments(train)

    serve = command("serve", "run the server (needs tether[server])")
    serve.add_argument(
        "--models",
        type=Path,
        metavar="FILE",
        help="TOML file of models (without it and --models-dir: the embedded tiny model)",
    )
    serve.add_argument(
        "--models-dir",
        type=Path,
        metavar="DIR",
        help="a ComfyUI or A1111 models folder (checkpoints/, controlnet/, loras/, "
        "embeddings/ or Stable-diffusion/, ControlNet/, Lora/, embeddings/)",
    )
    serve.add_argument(
        "--max-loaded",
        type=int,
        default=1,
        metavar="N",
        help="base models kept loaded; one more unloads the least recently used",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=50051, help="port (0: any free port)")
    serve.add_argument(
        "--devices",
        "--device",
        help="comma-separated torch devices, e.g. cuda:0,cuda:1; the workers take them in "
        "turn (default: every GPU, else cpu)",
    )
    serve.add_argument(
        "--workers", type=int, help="engine worker processes (default: one per device)"
    )
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
    serve.add_argument(
        "--max-pixels", type=int, default=1024 * 1024, help="largest width x height of one pass"
    )
    serve.add_argument(
        "--max-canvas-pixels",
        type=int,
        default=4096 * 4096,
        help="largest width x height of an output made in tiles (upscale, large init image)",
    )
    serve.add_argument("--max-steps", type=int, default=150, help="largest steps")
    serve.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics at http://HOST:PORT/metrics (0: any free port; "
        "default: none)",
    )
    serve.add_argument(
        "--drain-seconds",
        type=float,
        default=60.0,
        help="on SIGTERM, how long running jobs may take to finish",
    )
    # Speed over bit-exactness: the server's compiled.py, stream.py and autoencoders.py.
    serve.add_argument(
        "--fast",
        nargs="?",
        const="graphs",
        choices=["graphs", "compile"],
        help="capture denoising steps per shape on first use: CUDA graphs (the default; "
        "CUDA only) or torch.compile; within 4/255 of the exact images",
    )
    serve.add_argument(
        "--stream-batch",
        action="store_true",
        help="live sessions denoise consecutive frames in one batch (more fps, more lag)",
    )
    serve.add_argument(
        "--taesd-final",
        action="store_true",
        help="Generate encodes and decodes with the model's tiny autoencoder too",
    )
    return parser


def _client(args: argparse.Namespace) -> Client:
    return Client(args.server, token=args.token, tls=args.tls)


def _generate(args: argparse.Namespace) -> int:
    output_format = FORMATS_BY_EXTENSION.get(args.output.suffix.lower())
    if output_format is None:
        raise ValueError(f"-o {args.output}: use a .png, .jpg or .webp file name")
    width, height, init, mask = args.width, args.height, args.init, args.mask
    if init is not None and width is None and height is None:
        width, height, init, mask = _size_of_init(init, mask)
    if args.previews:
        args.previews.mkdir(parents=True, exist_ok=True)
    bar = _ProgressBar()
    with _client(args) as client:
        stream = client.stream(
            args.prompt,
            negative_prompt=args.negative,
            model=args.model,
            controls=args.control,
            loras=args.lora,
            seed=args.seed,
            steps=args.steps,
            guidance_scale=args.guidance,
            width=width,
            height=height,
            scheduler=args.scheduler,
            init_image=init,
            strength=args.strength,
            mask=mask,
            mask_blur=args.mask_blur,
            tiling=args.tiling,
            upscale=args.upscale,
            tile_size=args.tile_size,
            tile_overlap=args.tile_overlap,
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


def _size_of_init(
    init: Path, mask: Path | None
) -> tuple[int, int, Path | bytes, Path | bytes | None]:
    """The output size for an --init image without --width/--height: its own, read from its
    header. A side that is not a multiple of 8 is rounded down and the centres of the image
    and of a mask of the same size are cropped to it (with pillow): the server wants an init
    image of exactly the output size, and a crop keeps every other pixel as it is.
    Returns width, height, init image, mask."""
    size = images.encoded_size(init.read_bytes())
    if size is None:
        raise ValueError(f"--init {init}: not a PNG, JPEG or WebP file")
    width, height = size
    fitted = (width // 8 * 8, height // 8 * 8)
    if fitted == size:
        return width, height, init, mask
    if 0 in fitted:
        raise ValueError(f"--init {init}: {width}x{height} is smaller than 8x8")
    print(
        f"tether: --init is {width}x{height}; using its centre {fitted[0]}x{fitted[1]} "
        "(sizes are multiples of 8)",
        file=sys.stderr,
    )
    if mask is not None and images.encoded_size(mask.read_bytes()) == size:
        mask = _centre_crop(mask, *fitted)
    return *fitted, _centre_crop(init, *fitted), mask


def _centre_crop(path: Path, width: int, height: int) -> bytes:
    """The centre width x height of an image file, as a PNG file's bytes."""
    try:
        from PIL import Image as PILImage
    except ImportError:
        raise ValueError(
            f"cropping {path} to {width}x{height} needs pillow (pip install pillow); or crop "
            "it yourself, or pass --width and --height"
        ) from None
    with PILImage.open(path) as image:
        left, top = (image.width - width) // 2, (image.height - height) // 2
        cropped = image.crop((left, top, left + width, top + height))
        encoded = io.BytesIO()
        cropped.save(encoded, "PNG")
    return encoded.getvalue()


def _save_preview(pixels: np.ndarray, path: Path) -> None:
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
    for i, model in enumerate(listing.models):
        print(
            f"model    {model.name} ({model.family}, {model.default_width}x"
            f"{model.default_height} by default){' [default]' if i == 0 else ''}"
        )
    for control in listing.controls:
        print(f"control  {control.name} ({control.kind})")
    for lora in listing.loras:
        print(f"lora     {lora.name}")
    for embedding in listing.embeddings:
        print(f"embedding {embedding.name}")
    print(f"schedulers: {', '.join(listing.schedulers)}")
    return 0


def _info(args: argparse.Namespace) -> int:
    with _client(args) as client:
        info = client.server_info()
    limits = info.limits
    print(f"tether {info.version} on {info.device} ({info.dtype})")
    print(
        f"limits: {limits.max_pixels} pixels in one pass, {limits.max_canvas_pixels} in tiles, "
        f"{limits.max_steps} steps, {limits.max_controls} units, queue {limits.max_queue}, "
        f"batch {limits.max_batch}"
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


def _explain(error: TetherError, args: argparse.Namespace) -> str:
    """The line for a failed call: the server's message, or for the cases where that
    message speaks gRPC (metadata, TLS handshakes), what to do on this command line."""
    if isinstance(error, Cancelled):
        return "cancelled"
    kind = error.code.lower().replace("_", " ")
    if isinstance(error, Unauthenticated):
        if args.token:
            return f"{kind}: the server refused the token (from --token or $TETHER_TOKEN)"
        return f"{kind}: the server needs a token: pass --token TOKEN or set TETHER_TOKEN"
    if isinstance(error, Unavailable) and args.tls and "handshake" in str(error).lower():
        return (
            f"{kind}: the TLS handshake with {args.server} failed; is it a plaintext server? "
            "Then leave out --tls"
        )
    return f"{kind}: {error}"


def _quiet_grpc_core() -> None:
    """gRPC's C core logs some failures itself (a failed TLS handshake, ...) on file
    descriptor 2 before the call fails, and the CLI reports every failure in one line of its
    own. GRPC_VERBOSITY cannot quiet it: it is read when grpc is imported, and `import
    tether` has done that. So file descriptor 2 goes to /dev/null and Python's sys.stderr
    to a copy of it, for the rest of this process."""
    sys.stderr.flush()
    terminal = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stderr = open(  # left open: it is the CLI's stderr until the process ends
        terminal, "w", buffering=1, encoding=sys.stderr.encoding, errors=sys.stderr.errors
    )


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
    if args.command in ("generate", "models", "info"):
        _quiet_grpc_core()
    try:
        return command[args.command](args)
    except TetherError as error:
        print(f"tether: {_explain(error, args)}", file=sys.stderr)
    except (ValueError, OSError) as error:
        print(f"tether: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        # A generation running was cancelled on the server by Stream.result on its way out.
        print("tether: cancelled", file=sys.stderr)
        return _INTERRUPTED
    return 1
