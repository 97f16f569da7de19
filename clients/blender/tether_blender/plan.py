"""Check everything and build the request, before anything starts (Generate; the checks
and renders that Bake Texture shares with it are here too).

Every fault the user can fix (no camera, bad settings, server unreachable, wrong token, a
model the server does not have) is found here and raised as `UserError` with a message
for Blender's report; nothing in the scene has changed at that point. The only lasting
work, rendering the passes (and the colour picture for canny), comes last and renders a
temporary copy of the scene.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import bpy
import numpy as np
import tether
from tether.background import UserError

from . import catalog, control_maps
from .connection import ClientConfig, address_problem, describe, open_client
from .passes import Passes, PassesError, render_passes, render_size
from .preferences import client_config
from .projection import CameraSnapshot, snapshot_camera
from .settings import MAX_SEED, TetherSettings, chosen_loras, tiling, unit_options, units

__all__ = [
    "LIST_MODELS_TIMEOUT",
    "Plan",
    "Request",
    "UserError",
    "check_request",
    "check_server",
    "control_model",
    "prepare",
    "render_view",
]

# Seconds to wait for ListModels before telling the user the server does not answer; the
# UI waits this long at most (a local server that is down fails at once).
LIST_MODELS_TIMEOUT = 5.0
# Stable Diffusion works on 8x8-pixel latents.
_SIZE_MULTIPLE = 8


@dataclass(frozen=True)
class Request:
    """The checked settings and the server's answers that Generate and Bake Texture share:
    everything but the control units, which come from each view's renders."""

    config: ClientConfig
    prompt: str
    options: dict[str, Any]  # keyword arguments of tether.Client.stream, without controls
    width: int
    height: int
    units: tuple[tuple[str, str, control_maps.UnitOptions], ...]  # enabled: kind, model, options


@dataclass(frozen=True)
class Plan:
    """Everything a generation needs, checked, in plain Python values."""

    config: ClientConfig
    prompt: str
    options: dict[str, Any]  # keyword arguments of tether.Client.stream
    width: int
    height: int
    camera: CameraSnapshot
    targets: tuple[str, ...]  # names of the meshes to project the result onto


def prepare(context: bpy.types.Context) -> Plan:
    """Check the scene, settings and server; render the passes; build the request."""
    scene = context.scene
    settings: TetherSettings = scene.tether
    camera = scene.camera
    if camera is None:
        raise UserError("The scene has no active camera: add one, or set it in Scene properties")
    if camera.type != "CAMERA":
        raise UserError(f"The scene's camera {camera.name!r} is not a camera object")
    targets: tuple[str, ...] = ()
    if settings.project_onto_selected:
        targets = tuple(obj.name for obj in context.selected_objects if obj.type == "MESH")
        if not targets:
            raise UserError(
                "Project onto Selected is on but no mesh is selected: select the meshes to "
                "texture, or turn the option off"
            )
    request = check_request(context)
    controls, _passes = render_view(context, request, camera, data=False)
    snapshot = snapshot_camera(camera, context.evaluated_depsgraph_get(), scene)
    return Plan(
        config=request.config,
        prompt=request.prompt,
        options={**request.options, "controls": controls, "tiling": tiling(settings)},
        width=request.width,
        height=request.height,
        camera=snapshot,
        targets=targets,
    )


def check_request(context: bpy.types.Context) -> Request:
    """Check the settings, and with the server its models and limits (this also proves it
    is reachable and takes the token)."""
    scene = context.scene
    settings: TetherSettings = scene.tether
    width, height = render_size(scene)
    check_settings(settings, width, height)
    config, model_list, options = check_server(
        context, width, height, "lower the render resolution or its percentage"
    )

    enabled = []
    for kind, unit in units(settings):
        if not unit.enabled:
            continue
        name = control_model(model_list, kind, unit.model, f"the {kind} unit")
        enabled.append((kind, name, unit_options(unit)))
    return Request(
        config=config,
        prompt=settings.prompt,
        options=options,
        width=width,
        height=height,
        units=tuple(enabled),
    )


def control_model(model_list: tether.ModelList, kind: str, chosen: str, use: str) -> str:
    """The server's control model for a map of ``kind``: ``chosen`` (a unit's Model field),
    or with "" its first of that kind; UserError naming ``use`` if it has none."""
    name = catalog.control_for(model_list, kind, chosen.strip())
    if name is None:
        offered = ", ".join(catalog.control_names(kind)) or "none"
        wanted = repr(chosen) if chosen.strip() else f"a {kind} model"
        raise UserError(f"The server has no {wanted} for {use} (it has: {offered})")
    return name


def check_server(
    context: bpy.types.Context, width: int, height: int, size_fix: str
) -> tuple[ClientConfig, tether.ModelList, dict[str, Any]]:
    """Ask the server what it offers and check the panel's model, LoRAs, size and steps
    against it (``size_fix`` tells the user how to make the size smaller). Returns the
    client config, the server's list and the request's options (keyword arguments of
    tether.Client.stream) that every mode shares."""
    settings: TetherSettings = context.scene.tether
    config = client_config(context)
    problem = address_problem(config, online_access=bpy.app.online_access)
    if problem:
        raise UserError(problem)
    model_list = list_models(config)

    model = settings.model.strip()
    base_names = [m.name for m in model_list.models]
    if model and model not in base_names:
        raise UserError(f"The server has no model {model!r}; it has: {', '.join(base_names)}")
    loras = chosen_loras(settings)
    offered = [lora.name for lora in model_list.loras]
    names = [name for name, _ in loras]
    for name in names:
        if name not in offered:
            raise UserError(
                f"LoRAs: the server has no LoRA {name!r}; it has: {', '.join(offered) or 'none'}"
            )
        if names.count(name) > 1:
            raise UserError(f"LoRAs: {name!r} is chosen twice; keep one row per LoRA")
    limits = model_list.limits
    if limits.max_pixels and width * height > limits.max_pixels:
        raise UserError(
            f"Size {width}x{height} is over the server's limit of {limits.max_pixels} "
            f"pixels: {size_fix}"
        )
    if limits.max_steps and settings.steps > limits.max_steps:
        raise UserError(f"Steps: the server allows at most {limits.max_steps}")

    options: dict[str, Any] = {
        "negative_prompt": settings.negative_prompt,
        "seed": choose_seed(settings),
        "steps": settings.steps,
        "width": width,
        "height": height,
        "model": model or None,
        "loras": [tether.Lora(name, weight) for name, weight in loras],
        "preview": None if settings.preview == "NONE" else settings.preview.lower(),
    }
    return config, model_list, options


def render_view(
    context: bpy.types.Context, request: Request, camera: bpy.types.Object, *, data: bool
) -> tuple[list[tether.Control], Passes | None]:
    """Render from ``camera`` what the request's units need (the data passes also when
    ``data``) and build the units. Returns them and the passes (None if nothing was
    rendered)."""
    kinds = {kind for kind, _, _ in request.units}
    data = data or bool(kinds & set(control_maps.DATA_KINDS))
    colour = bool(kinds & set(control_maps.COLOUR_KINDS))
    if not (data or colour):
        return [], None
    try:
        passes = render_passes(
            context.scene, context.view_layer.name, data=data, colour=colour, camera=camera
        )
    except PassesError as error:
        raise UserError(str(error)) from None
    if passes.colour is not None and (passes.colour == passes.colour[0, 0]).all():
        raise UserError(
            "Canny unit: the colour render is one flat colour, so it has no edges; "
            "light the scene (lamps or a world), or turn the canny unit off"
        )
    camera_to_world = np.array(camera.evaluated_get(context.evaluated_depsgraph_get()).matrix_world)
    controls = [
        control_maps.control(kind, name, passes, camera_to_world, options)
        for kind, name, options in request.units
    ]
    return controls, passes


def choose_seed(settings: TetherSettings) -> int:
    """The seed to send. A random one is drawn here rather than by the server, so that it
    fits the Seed field and the user can type it in to get the same picture again."""
    if settings.use_random_seed:
        return random.randint(0, MAX_SEED)
    return settings.seed


def check_settings(settings: TetherSettings, width: int, height: int) -> None:
    """Settings the server would refuse, found before rendering anything."""
    if width % _SIZE_MULTIPLE or height % _SIZE_MULTIPLE or width <= 0 or height <= 0:
        raise UserError(
            f"Render size {width}x{height}: width and height must be multiples of "
            f"{_SIZE_MULTIPLE} (Output properties > Resolution and %)"
        )
    for kind, unit in units(settings):
        if not unit.enabled:
            continue
        if unit.start >= unit.end:
            raise UserError(
                f"{kind.capitalize()} unit: Start ({unit.start:.2f}) must be before "
                f"End ({unit.end:.2f})"
            )
        if hasattr(unit, "low") and unit.low > unit.high:
            raise UserError(
                f"{kind.capitalize()} unit: Low ({unit.low}) must not be above High ({unit.high})"
            )


def list_models(config: ClientConfig) -> tether.ModelList:
    """Ask the server what it offers (also proves it is reachable and takes the token)
    and remember the answer for the panel."""
    try:
        with open_client(config) as client:
            model_list = client.models(timeout=LIST_MODELS_TIMEOUT)
    except tether.TetherError as error:
        raise UserError(describe(error, config)) from None
    catalog.remember(model_list)
    return model_list
