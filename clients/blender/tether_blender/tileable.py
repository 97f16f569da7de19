"""Tileable Material: a tileable normal map in, a seamless albedo texture out, and a material
on the active object that repeats both without seams.

The normal map is a tangent-space map as Blender's Normal Map node reads it (OpenGL style):
R = X along the texture's right (+U), G = Y along its up (+V), B = Z out of the surface,
each encoded as (n + 1) / 2. A texture seen head-on is a flat surface facing the camera,
so its tangent frame is the view's (+X right, +Y up, +Z toward the viewer) and the decoded
vectors are view-space normals: `tether.maps.normals_from_view` encodes them for the
normal ControlNet (docs/conventions.md, "Normal maps"; red flips there). DirectX-style maps
(green down) are read with ``y_down``, and their green is flipped in the material too.

The request is Generate's (prompt, model, LoRAs, seed, steps) at Size x Size with
``tiling="xy"`` and one normal unit (the Normal unit's control model, the box's weight), so
the picture wraps around on both axes: every convolution of the UNet, the ControlNet and
the autoencoder pads with the opposite edge. The map is stretched to the size
(``resize="resize"``), never cropped, so that it still tiles. An optional Start Image (a
colour texture of that size, which should tile too) makes it img2img at Strength.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import bpy
import numpy as np
import tether
import tether.maps
from tether import background
from tether.background import UserError

from . import images
from .connection import ClientConfig, open_client
from .generation import Run
from .materials import assign_everywhere, tileable_material
from .mesh_data import active_uv_map
from .plan import check_server, control_model
from .settings import TetherSettings

__all__ = ["MaterialPlan", "TileableMaterial", "normal_map_image", "prepare_material"]


@dataclass(frozen=True)
class MaterialPlan:
    """Everything the Tileable Material job needs, checked, in plain Python values."""

    config: ClientConfig
    prompt: str
    options: dict[str, Any]  # keyword arguments of tether.Client.stream
    size: int
    target: str  # the mesh object that gets the material
    uv_map: str  # its active UV map, which the material reads the textures through
    normal_image: str  # the normal map's image name
    green_down: bool
    repeat: int


def prepare_material(context: bpy.types.Context) -> MaterialPlan:
    """Check the active object, the normal map, the settings and the server; read the
    normal map and build the request."""
    settings: TetherSettings = context.scene.tether
    obj = context.active_object
    if obj is None or obj.type != "MESH":
        raise UserError("Tileable Material: make the mesh to texture the active object")
    uv_map = active_uv_map(obj)
    if uv_map is None:
        raise UserError(
            f"{obj.name!r} has no UV map for the texture to repeat on: unwrap it first "
            "(Edit Mode > UV > Unwrap, for instance)"
        )
    image = settings.material_normal_map or normal_map_image(obj)
    if image is None:
        raise UserError(
            "Tileable Material: choose a Normal Map image, or give the active object a "
            "material whose Normal Map node reads an image"
        )
    size = settings.material_size
    if size % 8:
        raise UserError(f"Tileable Material: Size ({size}) must be a multiple of 8")
    normals = read_normals(image)
    config, model_list, options = check_server(
        context, size, size, "lower the Tileable Material's Size"
    )
    model = control_model(model_list, "normal", settings.normal.model, "the normal map")
    start = settings.material_start_image
    if start is not None:
        if tuple(start.size) != (size, size):
            width, height = start.size
            raise UserError(
                f"Tileable Material: the Start Image {start.name!r} is {width}x{height}; "
                f"it must be {size}x{size} (the Size), or leave it empty"
            )
        options.update(init_image=read_colour(start), strength=settings.material_strength)
    control = tether.Control(
        model,
        tether.maps.normals_from_view(normals, y_down=settings.material_green_down),
        weight=settings.material_weight,
        resize="resize",
    )
    return MaterialPlan(
        config=config,
        prompt=settings.prompt,
        options={**options, "controls": [control], "tiling": "xy"},
        size=size,
        target=obj.name,
        uv_map=uv_map,
        normal_image=image.name,
        green_down=settings.material_green_down,
        repeat=settings.material_repeat,
    )


def normal_map_image(obj: bpy.types.Object) -> bpy.types.Image | None:
    """The image that a tangent-space Normal Map node of the object's materials reads, in
    slot order; None if there is none."""
    for slot in obj.material_slots:
        material = slot.material
        if material is None or material.node_tree is None:
            continue
        for node in material.node_tree.nodes:
            if node.bl_idname != "ShaderNodeNormalMap" or node.space != "TANGENT":
                continue
            for link in node.inputs["Color"].links:
                source = link.from_node
                if source.bl_idname == "ShaderNodeTexImage" and source.image is not None:
                    return source.image
    return None


def read_rgb(image: bpy.types.Image) -> np.ndarray:
    """The image's stored RGB values, (H, W, 3) float32, top row first (k / 255 for
    8-bit images; linear values for float images)."""
    width, height = image.size
    if width == 0 or height == 0:
        raise UserError(f"Image {image.name!r} has no pixels (is its file missing?)")
    pixels = np.empty(width * height * image.channels, dtype=np.float32)
    image.pixels.foreach_get(pixels)
    return pixels.reshape(height, width, image.channels)[::-1, :, :3]


def read_normals(image: bpy.types.Image) -> np.ndarray:
    """The normal map's tangent-space vectors, (H, W, 3) float32, top row first. Normal
    maps are data: their stored values are decoded as they are."""
    return read_rgb(image) * 2.0 - 1.0


def read_colour(image: bpy.types.Image) -> np.ndarray:
    """A colour image as the server takes it: sRGB in 0..1. 8-bit images store sRGB;
    float images hold linear values, encoded here with the sRGB curve."""
    rgb = np.clip(read_rgb(image), 0.0, 1.0)
    if not image.is_float:
        return rgb
    return np.where(rgb <= 0.0031308, rgb * 12.92, 1.055 * rgb ** (1 / 2.4) - 0.055)


class TileableMaterial(Run):
    """The job: one tiled generation; the picture becomes the object's albedo texture."""

    def __init__(self, plan: MaterialPlan) -> None:
        super().__init__(plan.config, int(plan.options["steps"]), plan.size, plan.size)
        self.plan = plan
        self.image_title = f"{plan.target} Tether Albedo"
        self.seed: int | None = None
        self.material_name: str | None = None
        self.saved_to: str | None = None

    def _work(self, task: background.Task) -> tether.Result:
        with open_client(self.plan.config) as client:
            return task.generate(client, self.plan.prompt, **self.plan.options)

    def _finish(self, result: tether.Result) -> None:
        self.seed = result.seed
        self.step = self.total
        albedo = self._image()
        images.write_rgb(albedo, result.image)
        albedo["tether_seed"] = str(result.seed)
        albedo["tether_prompt"] = self.plan.prompt
        self.saved_to = images.save_or_pack(albedo, f"tether_{self.plan.target}_albedo")
        obj = bpy.data.objects.get(self.plan.target)
        normal = bpy.data.images.get(self.plan.normal_image)
        if obj is None or obj.type != "MESH" or normal is None:
            self.warnings.append(f"{self.plan.target!r} or its normal map is gone: no material")
            return
        material = tileable_material(
            albedo.name,
            albedo,
            normal,
            self.plan.uv_map,
            repeat=self.plan.repeat,
            green_down=self.plan.green_down,
        )
        assign_everywhere(obj, material)
        self.material_name = material.name

    def outcome(self) -> tuple[str, str]:
        if self.error:
            return "ERROR", self.error
        if self.cancelled:
            return "WARNING", "Tether: tileable material cancelled"
        parts = [
            f"Tether: seamless albedo {self.image_name!r}, seed {self.seed}, {self.saved_to}",
        ]
        if self.material_name:
            parts.append(f"material {self.material_name!r} on {self.plan.target}")
        parts.extend(self.warnings)
        return ("WARNING" if self.warnings else "INFO"), "; ".join(parts)
