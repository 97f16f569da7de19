"""Image datablocks: the live result image, its pixels, saving or packing it."""

from __future__ import annotations

import re
from pathlib import Path

import bpy
import numpy as np

__all__ = [
    "new_result_image",
    "new_texture_image",
    "save_or_pack",
    "show_in_image_editors",
    "write_rgb",
    "write_rgba",
]

# Custom property that marks images made by this add-on.
TAG = "tether"


def new_result_image(name: str, width: int, height: int) -> bpy.types.Image:
    """A new 8-bit sRGB image of the render size, tagged as Tether's."""
    image = bpy.data.images.new(name, width, height, alpha=False)
    image[TAG] = True
    return image


def new_texture_image(name: str, size: int, *, data: bool = False) -> bpy.types.Image:
    """A new square 8-bit image with alpha, tagged as Tether's; ``data`` marks it as
    non-colour data (a mask), which no colour management touches."""
    image = bpy.data.images.new(name, size, size, alpha=True)
    image[TAG] = True
    if data:
        image.colorspace_settings.name = "Non-Color"
    return image


def write_rgba(image: bpy.types.Image, rgba: np.ndarray) -> None:
    """Put an (h, w, 4) uint8 picture, top row first, into ``image`` of the same size, as
    it is (values k / 255 are stored as byte k)."""
    image.pixels.foreach_set((rgba[::-1].astype(np.float32) / 255.0).ravel())
    image.update()


def write_rgb(image: bpy.types.Image, rgb: np.ndarray) -> None:
    """Show an (h, w, 3) uint8 picture, top row first, in ``image``.

    A picture of another size (the 1/8-size fast previews) is scaled to the image's size
    by nearest neighbour, so the image keeps the render size from the first preview on.
    """
    width, height = image.size
    h, w = rgb.shape[:2]
    if (h, w) != (height, width):
        rows = (np.arange(height) * h) // height
        columns = (np.arange(width) * w) // width
        rgb = rgb[rows[:, None], columns[None, :]]
    rgba = np.ones((height, width, 4), dtype=np.float32)
    rgba[..., :3] = rgb.astype(np.float32) / 255.0
    # Blender stores rows bottom first.
    image.pixels.foreach_set(rgba[::-1].ravel())
    image.update()


def save_or_pack(image: bpy.types.Image, stem: str) -> str:
    """Keep the finished image with the project: saved as PNG next to the .blend file
    (as //<blend>_<stem>.png, numbered if taken), or packed into the .blend when the file
    has never been saved. Returns where it went, as words for the status line."""
    blend = bpy.data.filepath
    if not blend:
        image.pack()
        return "packed into the .blend file"
    folder = Path(blend).parent
    base = f"{Path(blend).stem}_{_safe(stem)}"
    path = folder / f"{base}.png"
    number = 1
    while path.exists():
        path = folder / f"{base}_{number}.png"
        number += 1
    image.filepath_raw = str(path)
    image.file_format = "PNG"
    image.save()
    # Relative, so that the texture moves with the project folder.
    image.filepath = bpy.path.relpath(str(path))
    return f"saved to {path}"


def show_in_image_editors(image: bpy.types.Image) -> None:
    """Display ``image`` in every Image Editor that shows nothing or an earlier Tether
    image; editors showing anything else are left alone."""
    window_manager = bpy.context.window_manager
    if window_manager is None:
        return
    for window in window_manager.windows:
        for area in window.screen.areas:
            if area.type != "IMAGE_EDITOR":
                continue
            space = area.spaces.active
            if space.image is None or space.image.get(TAG):
                space.image = image
            area.tag_redraw()


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "tether"
