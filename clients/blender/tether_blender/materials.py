"""Materials that show an image through a UV map, and giving them to objects: the
projected picture (projection) and the baked texture (baking) alike."""

from __future__ import annotations

import bpy

__all__ = ["assign_everywhere", "textured_material"]


def textured_material(
    name: str, image: bpy.types.Image, uv_map: str, extension: str
) -> bpy.types.Material:
    """A new Principled BSDF material whose base colour is ``image`` read through the UV
    map ``uv_map``; ``extension`` is the image node's ("CLIP", "REPEAT", ...)."""
    material = bpy.data.materials.new(name)
    if material.node_tree is None:  # Blender 4.x; 5.x materials always have nodes
        material.use_nodes = True
    nodes = material.node_tree.nodes
    links = material.node_tree.links
    shader = next((n for n in nodes if n.bl_idname == "ShaderNodeBsdfPrincipled"), None)
    if shader is None:
        shader = nodes.new("ShaderNodeBsdfPrincipled")
        output = next(n for n in nodes if n.bl_idname == "ShaderNodeOutputMaterial")
        links.new(shader.outputs["BSDF"], output.inputs["Surface"])
    texture = nodes.new("ShaderNodeTexImage")
    texture.image = image
    texture.extension = extension
    texture.location = (shader.location.x - 320, shader.location.y)
    uv_node = nodes.new("ShaderNodeUVMap")
    uv_node.uv_map = uv_map
    uv_node.location = (texture.location.x - 220, texture.location.y)
    links.new(uv_node.outputs["UV"], texture.inputs["Vector"])
    links.new(texture.outputs["Color"], shader.inputs["Base Color"])
    return material


def assign_everywhere(obj: bpy.types.Object, material: bpy.types.Material) -> None:
    """Put ``material`` in every material slot of ``obj`` (a first slot if it has none)."""
    if obj.material_slots:
        for slot in obj.material_slots:
            slot.material = material
    else:
        obj.data.materials.append(material)
