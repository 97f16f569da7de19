"""Bake Texture as Blender sees it: progress per view, each view's picture, and each
mesh's texture, written after every view and kept (saved or packed) when the job ends,
however it ends.

Per selected mesh, two new images (new each time, like Generate's pictures):

- "<object> Tether Texture": the colours on the mesh's active UV map; where no view saw
  the surface, magenta with alpha 0. A new material of the same name shows it through
  that UV map, in every material slot of the object.
- "<object> Tether Missing": white where no view saw the surface, black elsewhere
  (non-colour data): a mask for painting the rest by hand, or another bake.

Both are saved next to the .blend (``<blend>_tether_<object>_texture.png`` and
``..._missing.png``) or packed into it when the file was never saved, as Generate's
pictures are.
"""

from __future__ import annotations

from typing import Any

import bpy
from tether import background

from . import images
from .bake_views import BakeInputs, ViewBaked, ViewSkipped, ViewStarted, bake_views
from .generation import Run
from .materials import assign_everywhere, textured_material

__all__ = ["Bake"]


class Bake(Run):
    """Bake Texture: the views in turn, baked into the selected meshes' UV textures."""

    def __init__(self, inputs: BakeInputs) -> None:
        first = inputs.views[0].camera
        super().__init__(inputs.config, int(inputs.options["steps"]), first.width, first.height)
        self.inputs = inputs
        self.view = 0  # the view being generated, from 1; 0 before the first
        self.baked: list[str] = []  # names of the views painted in
        self.skipped: list[str] = []  # names of the views that showed nothing unpainted
        self.textures: dict[str, str] = {}  # object name -> its texture image's name
        self.masks: dict[str, str] = {}  # object name -> its missing mask's name
        self.painted: dict[str, float] = {}  # object name -> share of texels painted
        self.saved_to: dict[str, str] = {}  # object name -> where its texture went

    def _work(self, task: background.Task) -> int:
        return bake_views(task, self.inputs)

    def progress(self) -> str:
        return f"View {self.view} / {len(self.inputs.views)}: {super().progress()}"

    def _apply(self, event: Any) -> None:
        if isinstance(event, ViewStarted):
            self.view, self.step, self.queue_position = event.index + 1, 0, None
        elif isinstance(event, ViewSkipped):
            self.skipped.append(self.inputs.views[event.index].name)
        elif isinstance(event, ViewBaked):
            self._paint(event)
        else:
            super()._apply(event)
            if isinstance(event, (background.Failed, background.Stopped)):
                self._keep()

    def _finish(self, generated: int) -> None:
        self.step = self.total
        self._keep()

    def _paint(self, event: ViewBaked) -> None:
        """Show the view's picture and write the textures as they now are."""
        self.baked.append(self.inputs.views[event.index].name)
        images.write_rgb(self._image(), event.picture)
        size = self.inputs.texture_size
        for target in self.inputs.targets:
            rgba, missing, share = event.textures[target.name]
            self.painted[target.name] = share
            texture = self._own_image(self.textures, target.name, "Texture", size)
            images.write_rgba(texture, rgba)
            mask = self._own_image(self.masks, target.name, "Missing", size, data=True)
            grey = missing[..., None].repeat(4, axis=2)
            grey[..., 3] = 255
            images.write_rgba(mask, grey)

    def _own_image(
        self, names: dict[str, str], target: str, kind: str, size: int, *, data: bool = False
    ) -> bpy.types.Image:
        """The target's image of this kind, made on first use; for the texture also its
        material, put on the object (if it still exists)."""
        image = bpy.data.images.get(names[target]) if target in names else None
        if image is None:
            image = images.new_texture_image(f"{target} Tether {kind}", size, data=data)
            names[target] = image.name
            obj = bpy.data.objects.get(target)
            if kind != "Texture":
                pass
            elif obj is None or obj.type != "MESH":
                self.warnings.append(f"{target!r} is gone: its texture is on no material")
            else:
                uv_map = next(t.uv_map for t in self.inputs.targets if t.name == target)
                material = textured_material(image.name, image, uv_map, "REPEAT")
                assign_everywhere(obj, material)
        return image

    def _keep(self) -> None:
        """Save or pack every image written, so that none is lost with the session."""
        for kind, names in (("texture", self.textures), ("missing", self.masks)):
            for target, name in names.items():
                image = bpy.data.images.get(name)
                if image is not None:
                    where = images.save_or_pack(image, f"tether_{target}_{kind}")
                    if kind == "texture":
                        self.saved_to[target] = where

    def outcome(self) -> tuple[str, str]:
        count = len(self.inputs.views)
        level = "WARNING" if self.warnings else "INFO"
        if self.error:
            level, first = "ERROR", self.error
        elif self.cancelled:
            level, first = (
                "WARNING",
                f"Tether: bake cancelled after {len(self.baked)} of {count} views",
            )
        else:
            seed = self.inputs.options["seed"]
            first = f"Tether: baked {len(self.baked)} of {count} views, seeds from {seed}"
        parts = [first]
        parts.extend(
            f"{self.textures[target]!r} {self.painted[target]:.0%} painted (magenta: seen by "
            f"no view), {self.saved_to.get(target, 'not saved')}"
            for target in self.textures
        )
        if self.skipped:
            parts.append(f"skipped {', '.join(self.skipped)}: nothing unpainted in view")
        parts.extend(self.warnings)
        return level, "; ".join(parts)
