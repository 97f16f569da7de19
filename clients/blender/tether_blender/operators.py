"""Operators: Generate, Bake Texture, Tileable Material, Cancel, Refresh Models, the LoRA
rows, Project Result, and the report helper."""

from __future__ import annotations

import time

import bpy

from . import catalog, generation
from .bake_plan import prepare_bake
from .baking import Bake
from .connection import address_problem
from .plan import UserError, list_models, prepare
from .preferences import client_config
from .projection import apply_projection
from .tileable import TileableMaterial, prepare_material

__all__ = ["CLASSES"]


class _JobOperator:
    """What Generate and Bake Texture share (a mix-in: Blender registers the properties of
    each operator class): one job at a time, its checks before anything starts, and the
    wait option."""

    bl_options = {"REGISTER"}

    wait: bpy.props.BoolProperty(
        name="Wait",
        description=(
            "Block until the job is done (for scripts and background mode, where timers "
            "do not run); the outcome is this operator's report"
        ),
        default=False,
        options={"SKIP_SAVE"},
    )

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return generation.current() is None and context.scene is not None

    def prepare(self, context: bpy.types.Context) -> generation.Run:
        """Check and render everything; raises UserError."""
        raise NotImplementedError

    def execute(self, context: bpy.types.Context) -> set[str]:
        try:
            run = self.prepare(context)
        except UserError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        return start(self, run, wait=self.wait)


class TETHER_OT_generate(_JobOperator, bpy.types.Operator):
    """Render the passes of the enabled units (depth, normal, the colour picture for canny)
    from the active camera and generate a picture"""

    bl_idname = "tether.generate"
    bl_label = "Generate"

    def prepare(self, context: bpy.types.Context) -> generation.Run:
        return generation.Generation(prepare(context))


class TETHER_OT_bake_texture(_JobOperator, bpy.types.Operator):
    """Generate from each view in turn (the active camera, the selected cameras, or an
    orbit), each after the first conditioned on what the earlier ones painted, and bake
    the pictures into a texture on each selected mesh's UV map"""

    bl_idname = "tether.bake_texture"
    bl_label = "Bake Texture"

    def prepare(self, context: bpy.types.Context) -> generation.Run:
        return Bake(prepare_bake(context))


class TETHER_OT_tileable_material(_JobOperator, bpy.types.Operator):
    """Generate a seamless albedo texture from a tileable normal map and give the active
    object a material that repeats both"""

    bl_idname = "tether.tileable_material"
    bl_label = "Tileable Material"

    def prepare(self, context: bpy.types.Context) -> generation.Run:
        return TileableMaterial(prepare_material(context))


def start(operator: bpy.types.Operator, run: generation.Run, *, wait: bool) -> set[str]:
    """Start ``run``: with a timer that applies its events (the UI), or, with ``wait``,
    applying them here until it ends and reporting the outcome."""
    generation.start(run)
    if not wait:
        bpy.app.timers.register(generation.tick, first_interval=generation.TICK_SECONDS)
        return {"FINISHED"}
    while (interval := generation.tick(report=False)) is not None:
        time.sleep(interval)
    level, message = run.outcome()
    operator.report({level}, message)
    return {"CANCELLED"} if level == "ERROR" else {"FINISHED"}


class TETHER_OT_cancel(bpy.types.Operator):
    """Stop the running job: on the server, and before any further view"""

    bl_idname = "tether.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return generation.current() is not None

    def execute(self, context: bpy.types.Context) -> set[str]:
        generation.current().cancel()
        return {"FINISHED"}


class TETHER_OT_refresh_models(bpy.types.Operator):
    """Ask the server which models and control models it has"""

    bl_idname = "tether.refresh_models"
    bl_label = "Refresh Models"

    def execute(self, context: bpy.types.Context) -> set[str]:
        config = client_config(context)
        problem = address_problem(config, online_access=bpy.app.online_access)
        if problem:
            self.report({"ERROR"}, problem)
            return {"CANCELLED"}
        try:
            model_list = list_models(config)
        except UserError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        controls = ", ".join(f"{c.name} ({c.kind})" for c in model_list.controls) or "none"
        models = ", ".join(catalog.base_model_names())
        loras = ", ".join(catalog.lora_names()) or "none"
        self.report(
            {"INFO"}, f"Tether models: {models}; control models: {controls}; LoRAs: {loras}"
        )
        return {"FINISHED"}


class TETHER_OT_add_lora(bpy.types.Operator):
    """Add a LoRA row: a LoRA of the server (Refresh lists them) and its weight"""

    bl_idname = "tether.add_lora"
    bl_label = "Add LoRA"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        context.scene.tether.loras.add()
        return {"FINISHED"}


class TETHER_OT_remove_lora(bpy.types.Operator):
    """Remove this LoRA row"""

    bl_idname = "tether.remove_lora"
    bl_label = "Remove LoRA"
    bl_options = {"REGISTER", "UNDO", "INTERNAL"}

    index: bpy.props.IntProperty(min=0)

    def execute(self, context: bpy.types.Context) -> set[str]:
        loras = context.scene.tether.loras
        if self.index >= len(loras):
            return {"CANCELLED"}
        loras.remove(self.index)
        return {"FINISHED"}


class TETHER_OT_project_result(bpy.types.Operator):
    """Project the last generated picture onto the selected meshes, from the camera it was
    generated with"""

    bl_idname = "tether.project_result"
    bl_label = "Project onto Selected"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        done = generation.last()
        generated = isinstance(done, generation.Generation) and done.seed is not None
        return bool(generated and context.selected_objects)

    def execute(self, context: bpy.types.Context) -> set[str]:
        done = generation.last()
        image = bpy.data.images.get(done.image_name) if done.image_name else None
        if image is None:
            self.report({"ERROR"}, "The last generated image no longer exists")
            return {"CANCELLED"}
        _, skipped = apply_projection(list(context.selected_objects), image, done.plan.camera)
        if skipped:
            self.report({"WARNING"}, f"Not projected onto {', '.join(skipped)} (not meshes)")
        return {"FINISHED"}


class TETHER_OT_report(bpy.types.Operator):
    """Show a message of a generation that ended in the background"""

    bl_idname = "tether.report"
    bl_label = "Tether Report"
    bl_options = {"INTERNAL"}

    level: bpy.props.EnumProperty(
        items=[(level, level.title(), "") for level in ("INFO", "WARNING", "ERROR")],
        default="INFO",
    )
    message: bpy.props.StringProperty()

    def execute(self, context: bpy.types.Context) -> set[str]:
        self.report({self.level}, self.message)
        return {"FINISHED"}


CLASSES = (
    TETHER_OT_generate,
    TETHER_OT_bake_texture,
    TETHER_OT_tileable_material,
    TETHER_OT_cancel,
    TETHER_OT_refresh_models,
    TETHER_OT_add_lora,
    TETHER_OT_remove_lora,
    TETHER_OT_project_result,
    TETHER_OT_report,
)
