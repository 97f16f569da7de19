"""Training examples — an image, a control map and a caption each — from synthetic scenes
or from a folder of pairs, and the autoencoder's latents of their images.

A folder of pairs (`tether train control --pairs DIR`) holds one file per example in
each of three subfolders, matched by name:

    DIR/images/NAME.png          the picture to learn (PNG, JPEG or WebP, any size)
    DIR/conditions/NAME.png      its control map, in the convention of the unit's kind
                                 (white lines on black, near = white, ...), any size
    DIR/captions/NAME.txt        its caption, UTF-8 (may be empty)

Images are scaled to cover the training size and centre-cropped; maps are fitted the same
way with the server's own resampling (`resize.fit`), so a depth or normal map's background
never mixes into its foreground.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from PIL import Image
from tqdm import tqdm

from .. import resize, scenes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass
class Examples:
    """`images[i]`: (H, W, 3) uint8; `conditions[i]`: (H, W, 3) float32 in [0, 1] (None
    for the base model, which needs no maps); `captions[i]`: str. Sequences index like
    lists: arrays in memory, or files read when indexed."""

    images: Sequence[np.ndarray]
    captions: list[str]
    conditions: Sequence[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.captions)


def from_scenes(count: int, size: int, kind: str | None = None) -> Examples:
    """Scenes of seeds 0 .. count - 1 (never `scenes.HELD_OUT_SEED` or above), with the
    `kind` map of each when a kind is given."""
    if not 0 < count <= scenes.HELD_OUT_SEED:
        raise ValueError(f"--scenes: must be 1 to {scenes.HELD_OUT_SEED} (got {count})")
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    conditions = None if kind is None else _Maps(count, size, kind)
    captions = []
    for seed in tqdm(range(count), desc="scenes", unit="scene", leave=False):
        scene = scenes.render(scenes.describe(seed), size)
        images[seed] = scene.image
        captions.append(scene.caption)
        if conditions is not None:
            conditions.store(seed, scene.control(kind))
    return Examples(images, captions, conditions)


class _Maps:
    """Control maps kept as 8-bit, one channel for grey maps (depth, canny): thousands of
    them fit in memory."""

    def __init__(self, count: int, size: int, kind: str) -> None:
        self.pixels = np.empty((count, size, size, 3 if kind == "normal" else 1), np.uint8)

    def store(self, index: int, rgb: np.ndarray) -> None:
        self.pixels[index] = np.round(rgb[:, :, : self.pixels.shape[3]] * 255)

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index: int) -> np.ndarray:
        pixels = self.pixels[index].astype(np.float32) / 255
        return np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels


def from_pairs(folder: Path, size: int, kind: str) -> Examples:
    """The examples of a folder of pairs (see the module docstring)."""
    names = {}
    for sub in ("images", "conditions"):
        if not (folder / sub).is_dir():
            raise ValueError(f"--pairs {folder}: needs the subfolder {sub}/ (see --help)")
        names[sub] = {
            p.stem: p for p in (folder / sub).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
        }
    if not names["images"]:
        raise ValueError(f"--pairs {folder}: images/ holds no PNG, JPEG or WebP file")
    captions = []
    for name in sorted(names["images"]):
        if name not in names["conditions"]:
            raise ValueError(f"--pairs {folder}: images/{name} has no conditions/{name}.png")
        caption = folder / "captions" / f"{name}.txt"
        if not caption.is_file():
            raise ValueError(f"--pairs {folder}: images/{name} has no captions/{name}.txt")
        captions.append(caption.read_text(encoding="utf-8").strip())
    order = sorted(names["images"])
    return Examples(
        _Files([names["images"][n] for n in order], size, "photo"),
        captions,
        _Files([names["conditions"][n] for n in order], size, kind),
    )


class _Files:
    """Image files read, scaled and centre-cropped when indexed: uint8 pictures for kind
    "photo", float32 maps otherwise."""

    def __init__(self, paths: list[Path], size: int, kind: str) -> None:
        self.paths, self.size, self.kind = paths, size, kind

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        with Image.open(self.paths[index]) as file:
            rgb = np.asarray(file.convert("RGB"), dtype=np.float32) / 255
        fitted = resize.fit(rgb, self.size, self.size, "crop", self.kind)
        if self.kind == "photo":
            return np.floor(np.clip(fitted, 0, 1) * 255 + 0.5).astype(np.uint8)
        return fitted


def to_tensor(pictures: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """uint8 (H, W, 3) pictures -> (B, 3, H, W) float in [-1, 1], as the autoencoder takes."""
    batch = torch.from_numpy(np.stack(pictures)).to(device).permute(0, 3, 1, 2)
    return batch.float() / 127.5 - 1


@dataclass
class Latents:
    """The autoencoder's posterior for every example: a fresh sample each time it is drawn,
    as training from pixels would give, at the cost of one encoding per example."""

    mean: torch.Tensor  # (N, 4, h, w)
    std: torch.Tensor

    def sample(self, index: np.ndarray, generator: torch.Generator, scale: float) -> torch.Tensor:
        mean, std = self.mean[index], self.std[index]
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        return (mean + std * noise) * scale


@torch.no_grad()
def encode(vae: AutoencoderKL, images: Sequence[np.ndarray], batch: int = 32) -> Latents:
    """Encode every image once; latents stay on the CPU in float32."""
    means, stds = [], []
    for start in tqdm(range(0, len(images), batch), desc="encoding", unit="batch", leave=False):
        pixels = [images[i] for i in range(start, min(start + batch, len(images)))]
        posterior = vae.encode(to_tensor(pixels, vae.device).to(vae.dtype)).latent_dist
        means.append(posterior.mean.float().cpu())
        stds.append(posterior.std.float().cpu())
    return Latents(torch.cat(means), torch.cat(stds))
