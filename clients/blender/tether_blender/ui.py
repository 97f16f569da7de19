"""The panel, in the 3D View's sidebar (N) under the "Tether" tab."""

from __future__ import annotations

import bpy

from . import generation
from .passes import render_size
from .settings import units

__all__ = ["CLASSES", "draw_status"]


class VIEW3D_PT_tether(bpy.types.Panel):
    bl_label = "Tether"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Tether"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        settings = context.scene.tether
        layout.prop(settings, "prompt", text="")
        layout.prop(settings, "negative_prompt", text="", icon="REMOVE")

        column = layout.column(align=True)
        row = column.row(align=True)
        row.prop(settings, "model", text="", icon="SHADING_RENDERED")
        row.operator("tether.refresh_models", text="", icon="FILE_REFRESH")
        draw_loras(column, settings)
        column.prop(settings, "steps")
        row = column.row(align=True)
        row.prop(settings, "use_random_seed", text="", icon="RNDCURVE")
        sub = row.row(align=True)
        sub.enabled = not settings.use_random_seed
        sub.prop(settings, "seed")
        width, height = render_size(context.scene)
        column.label(text=f"Size: {width} x {height} (render resolution)", icon="IMAGE_DATA")
        layout.prop(settings, "preview")

        for kind, unit in units(settings):
            box = layout.box()
            header = box.row()
            header.prop(unit, "enabled", text=f"{kind.capitalize()} from render")
            body = box.column(align=True)
            body.enabled = unit.enabled
            body.prop(unit, "model", text="", icon="NODE_TEXTURE")
            body.prop(unit, "weight")
            row = body.row(align=True)
            row.prop(unit, "start")
            row.prop(unit, "end")
            if kind == "canny":
                row = body.row(align=True)
                row.prop(unit, "low")
                row.prop(unit, "high")

        box = layout.box()
        box.label(text="Generate", icon="RENDER_STILL")
        box.prop(settings, "tiling", text="")
        box.prop(settings, "project_onto_selected")
        draw_bake_options(layout.box(), settings)
        draw_material_options(layout.box(), settings)
        draw_status(layout)


def draw_loras(layout: bpy.types.UILayout, settings: bpy.types.PropertyGroup) -> None:
    """One row per LoRA (enable, name with the server's list, weight, remove), then Add."""
    for index, row_settings in enumerate(settings.loras):
        row = layout.row(align=True)
        row.prop(row_settings, "enabled", text="")
        sub = row.row(align=True)
        sub.enabled = row_settings.enabled
        sub.prop(row_settings, "lora", text="", icon="MODIFIER")
        sub.prop(row_settings, "weight", text="")
        remove = row.operator("tether.remove_lora", text="", icon="X")
        remove.index = index
    layout.operator("tether.add_lora", icon="ADD")


def draw_material_options(box: bpy.types.UILayout, settings: bpy.types.PropertyGroup) -> None:
    """Tileable Material's options: the normal map in, the texture's size and repeats."""
    box.label(text="Tileable Material (active object)", icon="MATERIAL")
    box.prop(settings, "material_normal_map")
    box.prop(settings, "material_green_down")
    box.prop(settings, "material_start_image")
    if settings.material_start_image is not None:
        box.prop(settings, "material_strength")
    row = box.row(align=True)
    row.prop(settings, "material_size")
    row.prop(settings, "material_weight")
    box.prop(settings, "material_repeat")


def draw_bake_options(box: bpy.types.UILayout, settings: bpy.types.PropertyGroup) -> None:
    """Bake Texture's options: the views and the texture."""
    box.label(text="UV Texture (Bake Texture)", icon="UV")
    box.prop(settings, "views", text="")
    if settings.views == "ORBIT":
        row = box.row(align=True)
        row.prop(settings, "orbit_count")
        row.prop(settings, "orbit_elevation")
    row = box.row(align=True)
    row.prop(settings, "texture_size")
    row.prop(settings, "texture_margin")
    box.prop(settings, "max_angle")


def draw_status(layout: bpy.types.UILayout) -> None:
    """Generate, Bake Texture and Tileable Material, or progress and Cancel while a job
    runs, then how the last one ended."""
    running = generation.current()
    if running is not None:
        row = layout.row(align=True)
        icon = "SORTTIME" if running.queue_position is not None else "RENDER_STILL"
        row.label(text=running.progress(), icon=icon)
        row.operator("tether.cancel", text="Cancel", icon="CANCEL")
        return
    row = layout.row(align=True)
    row.operator("tether.generate", icon="RENDER_STILL")
    row.operator("tether.bake_texture", icon="TEXTURE")
    layout.operator("tether.tileable_material", icon="MATERIAL")
    done = generation.last()
    if done is None:
        return
    level, message = done.outcome()
    icon = {"ERROR": "ERROR", "WARNING": "INFO"}.get(level, "CHECKMARK")
    row = layout.row()
    row.alert = level == "ERROR"
    row.label(text=message.removeprefix("Tether: "), icon=icon)
    if isinstance(done, generation.Generation) and done.seed is not None:
        layout.operator("tether.project_result", icon="MOD_UVPROJECT")


CLASSES = (VIEW3D_PT_tether,)
