"""`tether train base|control`: the command line of training.

    tether train base --out DIR                  # a small model from scratch, on scenes
    tether train control --kind depth --out DIR  # a ControlNet for the embedded model
    tether train control --pairs PAIRS --kind seg --models sd15.toml --out DIR \\
        --device cuda --dtype float16 --lr 1e-5 --batch 4

`add_arguments` only declares options (no torch here: the SDK's `tether` command builds
its parser from it); `main` imports the training code.
"""

from __future__ import annotations

import argparse
from pathlib import Path

SCENE_KINDS = ("depth", "normal", "canny")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="train_command", required=True)
    base = commands.add_parser(
        "base",
        help="train a small model (autoencoder, UNet, text encoder) on synthetic scenes",
        description="Train a small SD-1.5-shaped model from random weights on synthetic scenes "
        "(seeds 0..N-1), at 128x128: the autoencoder first, then UNet and text encoder.",
    )
    _common(base, steps=3500, batch=32, lr=5e-4)
    base.add_argument("--vae-steps", type=int, default=2500, help="autoencoder steps")
    base.add_argument("--vae-batch", type=int, default=16, help="64x64 crops per step")
    base.add_argument("--vae-lr", type=float, default=1.5e-3, help="autoencoder learning rate")

    control = commands.add_parser(
        "control",
        help="train a ControlNet unit for a base model, the ControlNet paper's way",
        description="Train a ControlNet: a trainable copy of the base UNet's encoder joined "
        "through zero convolutions, the base locked, on synthetic scenes (--kind depth, "
        "normal or canny) or on a folder of pairs (--pairs DIR: images/NAME.png, "
        "conditions/NAME.png, captions/NAME.txt). Prints the TOML entry that serves it.",
    )
    _common(control, steps=1500, batch=32, lr=5e-4)
    control.add_argument(
        "--kind",
        required=True,
        help="the map the unit reads: depth, normal or canny from scenes; with --pairs any "
        "kind a models TOML accepts (canny, depth, normal, seg, ...)",
    )
    control.add_argument("--pairs", type=Path, metavar="DIR", help="train on a folder of pairs")
    control.add_argument(
        "--models", type=Path, help="TOML file whose base model to use (default: embedded tiny)"
    )
    control.add_argument("--name", help="the unit's name in the TOML (default: --kind)")
    control.add_argument(
        "--add", action="store_true", help="append the unit's entry to the --models file"
    )
    control.add_argument("--size", type=int, help="training size (default: the base's own)")
    control.add_argument(
        "--hint-channels",
        type=_channels,
        default=(16, 32, 96, 256),
        metavar="C1,C2,C3,C4",
        help="the hint encoder's widths (default: SD's 16,32,96,256; the tiny units use "
        "8,16,32,64)",
    )


def _common(parser: argparse.ArgumentParser, steps: int, batch: int, lr: float) -> None:
    parser.add_argument("--out", type=Path, required=True, help="folder to write to")
    parser.add_argument(
        "--checkpoints", type=Path, help="checkpoint folder (default: OUT/checkpoints)"
    )
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoints there")
    parser.add_argument("--scenes", type=int, default=8000, help="synthetic scenes to train on")
    parser.add_argument("--steps", type=int, default=steps, help=f"steps (default {steps})")
    parser.add_argument("--batch", type=int, default=batch, help=f"batch (default {batch})")
    parser.add_argument("--lr", type=float, default=lr, help=f"peak learning rate ({lr})")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    parser.add_argument("--checkpoint-every", type=int, default=250, help="steps")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--dtype",
        choices=["float32", "float16", "bfloat16"],
        default="float32",
        help="compute dtype: float16/bfloat16 = mixed precision, trained weights stay float32",
    )
    parser.add_argument(
        "--save-dtype",
        choices=["float32", "float16", "bfloat16"],
        default="float32",
        help="dtype of the written weights",
    )
    parser.add_argument("--threads", type=int, help="CPU threads for torch")


def _channels(text: str) -> tuple[int, ...]:
    try:
        channels = tuple(int(c) for c in text.split(","))
    except ValueError:
        channels = ()
    if len(channels) != 4 or min(channels) < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected four positive widths, e.g. 16,32,96,256 (the hint encoder "
            "halves the map three times, to the latents' factor 8)"
        )
    return channels


def main(args: argparse.Namespace) -> int:
    _check(args)
    import torch

    from .. import catalog, models

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.train_command == "control" and args.kind not in catalog.CONTROL_KINDS:
        kinds = ", ".join(catalog.CONTROL_KINDS)
        raise ValueError(f"--kind: must be one of {kinds} (got {args.kind!r})")
    args.device = args.device or models.default_device()
    args.checkpoints = args.checkpoints or args.out / "checkpoints"
    if args.train_command == "base":
        from . import base

        toml = base.train(args)
        print(f"wrote {args.out}; serve it with: tether serve --models {toml}")
        return 0
    from ..errors import ModelConfigError
    from . import control

    try:
        entry = control.train(args)
    except ModelConfigError as error:  # the CLI reports ValueErrors in one line
        raise ValueError(f"--models: {error}") from error
    where = f"added to {args.models}" if args.add else "add it to a models TOML to serve it"
    print(f"wrote {args.out}; its entry ({where}):\n\n{entry}")
    return 0


def _check(args: argparse.Namespace) -> None:
    """Refuse bad options before anything is loaded."""
    for name in ("steps", "batch", "scenes", "checkpoint_every"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')}: must be at least 1")
    if args.lr <= 0:
        raise ValueError("--lr: must be positive")
    checkpoints = args.checkpoints or args.out / "checkpoints"
    if not args.resume and any(checkpoints.glob("*.ckpt")):
        raise ValueError(
            f"{checkpoints} holds checkpoints: pass --resume to continue from them, "
            "or choose another --out"
        )
    if args.train_command == "base":
        if args.vae_steps < 1 or args.vae_batch < 1 or args.vae_lr <= 0:
            raise ValueError("--vae-steps and --vae-batch: at least 1; --vae-lr: positive")
        return
    args.name = args.name or args.kind
    if args.pairs is None and args.kind not in SCENE_KINDS:
        raise ValueError(
            f"--kind: scenes give {', '.join(SCENE_KINDS)} maps (got {args.kind!r}); "
            "other kinds need --pairs DIR"
        )
    if args.pairs is not None and not args.pairs.is_dir():
        raise ValueError(f"--pairs {args.pairs}: not a folder")
    if args.add and args.models is None:
        raise ValueError("--add: needs --models FILE (the embedded model has no file to add to)")
    if args.size is not None and (args.size < 8 or args.size % 8):
        raise ValueError(f"--size: must be a positive multiple of 8 (got {args.size})")
