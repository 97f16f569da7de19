"""Per-scene generation settings (saved with the .blend): ``scene.tether``."""

from __future__ import annotations

import math

import bpy

from . import catalog
from .control_maps import KINDS, UnitOptions

__all__ = [
    "CLASSES",
    "MAX_SEED",
    "TetherCannyUnit",
    "TetherLora",
    "TetherSettings",
    "TetherUnit",
    "chosen_loras",
    "register",
    "tiling",
    "unit_options",
    "units",
    "unregister",
]

MAX_SEED = 2**31 - 1  # Blender's IntProperty is a signed 32-bit int


def _search_base_models(self: bpy.types.PropertyGroup, context: bpy.types.Context, text: str):
    return [name for name in catalog.base_model_names() if text.lower() in name.lower()]


def _search_loras(self: bpy.types.PropertyGroup, context: bpy.types.Context, text: str):
    return [name for name in catalog.lora_names() if text.lower() in name.lower()]


def _search_control_models(self: bpy.types.PropertyGroup, context: bpy.types.Context, text: str):
    # The unit's kind is its property name on TetherSettings: "tether.depth" -> "depth".
    kind = self.path_from_id().rpartition(".")[2]
    return [name for name in catalog.control_names(kind) if text.lower() in name.lower()]


class _UnitProperties:
    """What every unit has (a mix-in: Blender registers the properties of each class)."""

    model: bpy.props.StringProperty(
        name="Model",
        description="Control model on the server; empty = the server's first of this kind",
        search=_search_control_models,
    )
    weight: bpy.props.FloatProperty(
        name="Weight",
        description="How strongly this map steers the picture",
        default=1.0,
        min=0.0,
        max=2.0,
    )
    start: bpy.props.FloatProperty(
        name="Start",
        description="Fraction of the steps at which the unit starts acting",
        default=0.0,
        min=0.0,
        max=1.0,
        subtype="FACTOR",
    )
    end: bpy.props.FloatProperty(
        name="End",
        description="Fraction of the steps at which the unit stops acting",
        default=1.0,
        min=0.0,
        max=1.0,
        subtype="FACTOR",
    )


class TetherUnit(_UnitProperties, bpy.types.PropertyGroup):
    """One ControlNet unit made from a data pass (depth, normal)."""

    enabled: bpy.props.BoolProperty(name="Enabled", default=True)


class TetherCannyUnit(_UnitProperties, bpy.types.PropertyGroup):
    """The canny unit: edges of the colour picture, found on the server. Off by default:
    it costs a colour render, and a server without a canny model would refuse it."""

    enabled: bpy.props.BoolProperty(name="Enabled", default=False)
    low: bpy.props.IntProperty(
        name="Low",
        description=(
            "Canny's lower threshold, on the gradient of the 8-bit grey picture: weaker "
            "gradients make no edge, stronger ones continue an edge begun above High"
        ),
        default=100,
        min=0,
        max=255,
    )
    high: bpy.props.IntProperty(
        name="High",
        description="Canny's upper threshold: gradients above it start an edge",
        default=200,
        min=0,
        max=255,
    )


class TetherLora(bpy.types.PropertyGroup):
    """One LoRA of the request: a name from the server's list and its weight."""

    enabled: bpy.props.BoolProperty(name="Enabled", default=True)
    lora: bpy.props.StringProperty(
        name="LoRA",
        description="LoRA on the server (Refresh lists them); applied to this generation",
        search=_search_loras,
    )
    weight: bpy.props.FloatProperty(
        name="Weight",
        description="How strongly the LoRA acts (negative: the other way)",
        default=1.0,
        min=-10.0,
        max=10.0,
        soft_min=-2.0,
        soft_max=2.0,
    )


class TetherSettings(bpy.types.PropertyGroup):
    prompt: bpy.props.StringProperty(name="Prompt", description="What the picture shows")
    negative_prompt: bpy.props.StringProperty(
        name="Negative", description="What the picture should not show"
    )
    model: bpy.props.StringProperty(
        name="Model",
        description="Base model on the server; empty = the server's default",
        search=_search_base_models,
    )
    loras: bpy.props.CollectionProperty(type=TetherLora, name="LoRAs")
    use_random_seed: bpy.props.BoolProperty(
        name="Random Seed",
        description="Let the server pick a new seed every time",
        default=True,
    )
    seed: bpy.props.IntProperty(
        name="Seed",
        description="Same seed and settings give the same picture",
        default=0,
        min=0,
        max=MAX_SEED,
    )
    steps: bpy.props.IntProperty(
        name="Steps",
        description="Denoising steps",
        default=20,
        min=1,
        max=150,
    )
    preview: bpy.props.EnumProperty(
        name="Preview",
        description="Pictures shown while the server works",
        items=[
            ("FAST", "Fast", "A small preview every step, almost free"),
            ("FULL", "Full", "A full-size preview every step, costs time on the server"),
            ("NONE", "None", "Only the final picture"),
        ],
        default="FAST",
    )
    tiling: bpy.props.EnumProperty(
        name="Tiling",
        description=(
            "Generate a picture that wraps around, so that copies placed side by side show "
            "no seam (give control maps that tile too)"
        ),
        items=[
            ("NONE", "No Tiling", "An ordinary picture"),
            ("X", "Tile X", "The left and right edges meet without a seam"),
            ("Y", "Tile Y", "The top and bottom edges meet without a seam"),
            ("XY", "Tile X and Y", "Both: a seamless texture"),
        ],
        default="NONE",
    )
    project_onto_selected: bpy.props.BoolProperty(
        name="Project onto Selected",
        description=(
            "When the picture is done, give the selected meshes a UV map projected from "
            "the camera and a material showing the picture"
        ),
        default=False,
    )
    # Bake Texture (baking.py): views, and the texture on each selected mesh's UV map.
    views: bpy.props.EnumProperty(
        name="Views",
        description="The cameras Bake Texture generates from, one picture each",
        items=[
            ("ACTIVE", "Active Camera", "The scene's camera"),
            (
                "SELECTED",
                "Selected Cameras",
                "The selected camera objects: the scene's camera first if selected, then by name",
            ),
            (
                "ORBIT",
                "Orbit",
                "Cameras the add-on places evenly around the selected meshes (in the "
                "collection 'Tether Orbit', replaced each time), the first where the "
                "scene's camera is",
            ),
        ],
        default="ACTIVE",
    )
    orbit_count: bpy.props.IntProperty(
        name="Cameras", description="How many cameras the orbit has", default=4, min=2, max=16
    )
    orbit_elevation: bpy.props.FloatProperty(
        name="Elevation",
        description="Height of the orbit's cameras, as an angle above the meshes' centre",
        default=math.radians(30),
        min=math.radians(-80),
        max=math.radians(80),
        subtype="ANGLE",
    )
    texture_size: bpy.props.IntProperty(
        name="Texture Size",
        description="Width and height of each mesh's baked texture, in pixels",
        default=1024,
        min=64,
        max=8192,
    )
    texture_margin: bpy.props.IntProperty(
        name="Margin",
        description=(
            "Pixels by which the baked colours bleed past the edges of UV islands, so that "
            "texture filtering and mipmaps do not reach the empty space between them"
        ),
        default=8,
        min=0,
        max=64,
    )
    max_angle: bpy.props.FloatProperty(
        name="Max Angle",
        description=(
            "Surfaces a view sees more obliquely than this (angle between the surface's "
            "normal and the direction to the camera) take no colour from it"
        ),
        default=math.radians(75),
        min=math.radians(10),
        max=math.radians(89),
        subtype="ANGLE",
    )
    # Tileable Material (tileable.py): a tileable normal map in, a seamless albedo out.
    material_normal_map: bpy.props.PointerProperty(
        type=bpy.types.Image,
        name="Normal Map",
        description=(
            "Tangent-space normal map that tiles (OpenGL style, green up, as Blender's "
            "Normal Map node reads it); empty = the one in the active object's material"
        ),
    )
    material_green_down: bpy.props.BoolProperty(
        name="Green Down (DirectX)",
        description="The normal map's green channel points down (DirectX style), not up",
        default=False,
    )
    material_start_image: bpy.props.PointerProperty(
        type=bpy.types.Image,
        name="Start Image",
        description=(
            "Optional colour texture to start from (img2img at Strength), e.g. an albedo to "
            "make seamless; its size must be Size x Size. Empty = from the prompt alone"
        ),
    )
    material_strength: bpy.props.FloatProperty(
        name="Strength",
        description="With a Start Image: how much of it is repainted (1 = all of it)",
        default=0.6,
        min=0.01,
        max=1.0,
        subtype="FACTOR",
    )
    material_size: bpy.props.IntProperty(
        name="Size",
        description="Width and height of the albedo texture, in pixels (a multiple of 8)",
        default=512,
        min=64,
        max=2048,
        step=8,
    )
    material_weight: bpy.props.FloatProperty(
        name="Weight",
        description="How strongly the normal map steers the texture",
        default=1.0,
        min=0.0,
        max=2.0,
    )
    material_repeat: bpy.props.IntProperty(
        name="Repeat",
        description="How many times the texture repeats across the UV map's 0..1 square",
        default=1,
        min=1,
        max=64,
    )
    # One unit per kind in control_maps.KINDS, named after the kind.
    depth: bpy.props.PointerProperty(type=TetherUnit, name="Depth")
    normal: bpy.props.PointerProperty(type=TetherUnit, name="Normal")
    canny: bpy.props.PointerProperty(type=TetherCannyUnit, name="Canny")


def units(settings: TetherSettings) -> list[tuple[str, TetherUnit | TetherCannyUnit]]:
    """(kind, unit) for every unit, in panel order."""
    return [(kind, getattr(settings, kind)) for kind in KINDS]


def unit_options(unit: TetherUnit | TetherCannyUnit) -> UnitOptions:
    """A unit's settings as plain values (for `control_maps.control`)."""
    thresholds = {"low": unit.low, "high": unit.high} if hasattr(unit, "low") else {}
    return UnitOptions(weight=unit.weight, start=unit.start, end=unit.end, **thresholds)


def chosen_loras(settings: TetherSettings) -> list[tuple[str, float]]:
    """(name, weight) of the enabled LoRA rows with a name, in panel order."""
    return [
        (row.lora.strip(), row.weight) for row in settings.loras if row.enabled and row.lora.strip()
    ]


def tiling(settings: TetherSettings) -> str | None:
    """The request's ``tiling``: None, "x", "y" or "xy"."""
    return None if settings.tiling == "NONE" else settings.tiling.lower()


CLASSES = (TetherUnit, TetherCannyUnit, TetherLora, TetherSettings)


def register() -> None:
    bpy.types.Scene.tether = bpy.props.PointerProperty(type=TetherSettings)


def unregister() -> None:
    del bpy.types.Scene.tether
