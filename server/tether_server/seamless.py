"""Seamless tiling: circular padding, per axis, for the duration of a run.

An image tiles when the networks that make it see it as a torus: every convolution pads
a wrapped axis with the pixels of the opposite edge instead of zeros, as Dream Textures
and A1111 do by setting `padding_mode="circular"` on every Conv2d. PyTorch's padding_mode
applies to both axes at once, so one axis is wrapped here by padding explicitly
(`F.pad(mode="circular")` on that axis, zeros on the other) and running the convolution
without padding of its own.

`wrapped(modules, tiling)` swaps the forward of every zero-padded Conv2d in `modules` (the
UNet, the ControlNets, the autoencoder) for the padded one, and deletes the swap on the way
out: the class's own forward is back, so an untiled run afterwards is bit for bit the one
diffusers computes. The autoencoder's encoder also pads one column and one row itself
before its stride-2 convolutions (diffusers' Downsample2D with padding=0); those pads wrap
too, so an init image that tiles is encoded as one (A1111 leaves them zero).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from diffusers.models.downsampling import Downsample2D

# Which axes wrap, (x, y), for each Job.tiling.
TILINGS = {"none": (False, False), "x": (True, False), "y": (False, True), "xy": (True, True)}


@contextlib.contextmanager
def wrapped(modules: Iterable[torch.nn.Module], tiling: str) -> Iterator[None]:
    """Circular padding on the axes `tiling` names in every convolution of `modules`,
    until the block ends. "none" changes nothing."""
    wrap_x, wrap_y = TILINGS[tiling]
    swapped: list[torch.nn.Module] = []
    try:
        if wrap_x or wrap_y:
            for module in modules:
                for layer in module.modules():
                    forward = _wrapped_forward(layer, wrap_x, wrap_y)
                    if forward is not None:
                        layer.forward = forward  # an instance attribute shadows the class's
                        swapped.append(layer)
        yield
    finally:
        for layer in swapped:
            del layer.forward


def _pad(x: torch.Tensor, sides: tuple[int, int, int, int], wrap_x: bool, wrap_y: bool):
    """Pad (left, right, top, bottom) of an (N, C, H, W) tensor: circular on the wrapped
    axes, zeros on the others."""
    left, right, top, bottom = sides
    if wrap_x and wrap_y:
        return F.pad(x, sides, mode="circular")
    x = F.pad(x, (left, right, 0, 0), mode="circular" if wrap_x else "constant")
    return F.pad(x, (0, 0, top, bottom), mode="circular" if wrap_y else "constant")


def _wrapped_forward(layer: torch.nn.Module, wrap_x: bool, wrap_y: bool):
    """The forward that wraps `layer`'s padding, or None if it pads nothing with zeros."""
    if isinstance(layer, torch.nn.Conv2d):
        if layer.padding_mode != "zeros" or not isinstance(layer.padding, tuple):
            return None
        pad_y, pad_x = layer.padding
        if pad_x == 0 and pad_y == 0:
            return None
        sides = (pad_x, pad_x, pad_y, pad_y)

        def conv_forward(x: torch.Tensor) -> torch.Tensor:
            padded = _pad(x, sides, wrap_x, wrap_y)
            return F.conv2d(
                padded, layer.weight, layer.bias, layer.stride, 0, layer.dilation, layer.groups
            )

        return conv_forward
    if isinstance(layer, Downsample2D) and layer.use_conv and layer.padding == 0:

        def downsample_forward(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
            if layer.norm is not None:
                x = layer.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            # diffusers pads (0, 1, 0, 1) with zeros here; its conv has no padding of its own.
            return layer.conv(_pad(x, (0, 1, 0, 1), wrap_x, wrap_y))

        return downsample_forward
    return None
