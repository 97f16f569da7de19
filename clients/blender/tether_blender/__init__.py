"""Tether for Blender: render a scene's depth and normal passes and its colour picture
from the active camera, generate a picture with Stable Diffusion + ControlNet (depth,
normal, canny) on a Tether server, and use it as a camera-projected texture; or generate
from several views in turn and bake them into a texture on each mesh's UV map; or make a
seamless albedo texture from a tileable normal map.

Modules, one idea each:
    preferences   server address, token, TLS (add-on preferences)
    settings      per-scene generation settings (scene.tether)
    catalog       the server's models and LoRAs, remembered for the panel
    connection    address checks (online access), client, error messages
    passes, exr   rendering the passes and the colour picture, reading them back
    control_maps  passes -> control units through tether.maps and tether.Control
    plan          checks and the request, before anything starts
    generation    the request on a worker thread (tether.background), its events
                  applied on the main thread
    images        the result image: pixels, saving, packing
    projection    UV map projected from the camera, and the material
    materials     materials showing images through a UV map
    mesh_data     a mesh's evaluated triangles and UVs in world space
    view_cameras  the views of Bake Texture: active, selected, or an orbit placed here
    bake_plan     Bake Texture's checks and renders, before anything starts
    bake_views    Bake Texture's work: views generated, conditioned and baked in turn
    baking        Bake Texture's events applied: textures, materials, saving
    uvbake        texture-space geometry in numpy (no bpy): texels, visibility, blending
    tileable      Tileable Material: a tileable normal map in, a seamless albedo out
    operators, ui the operators and the sidebar panel
"""

from __future__ import annotations

import bpy

from . import generation, operators, preferences, settings, ui

_CLASSES = (*preferences.CLASSES, *settings.CLASSES, *operators.CLASSES, *ui.CLASSES)


def register() -> None:
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    settings.register()
    bpy.app.handlers.load_pre.append(generation.on_load_pre)


def unregister() -> None:
    if generation.on_load_pre in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(generation.on_load_pre)
    generation.stop_all()
    settings.unregister()
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
