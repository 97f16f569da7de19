"""Materials that show an image through a UV map, and giving them to objects: the
projected picture (projection), the baked texture (baking) and the tileable material
(tileable) alike."""

from __future__ import annotations

import bpy

__all__ = ["assign_everywhere", "textured_material", "tileable_material"]


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


def tileable_material(
    name: str,
    albedo: bpy.types.Image,
    normal: bpy.types.Image,
    uv_map: str,
    *,
    repeat: int,
    green_down: bool,
) -> bpy.types.Material:
    """A material showing ``albedo`` as base colour and ``normal`` (a tangent-space map) as
    its normal, both repeated ``repeat`` times across the UV map's 0..1 square. A DirectX
    map (``green_down``) has its green flipped, since the Normal Map node reads OpenGL's."""
    material = textured_material(name, albedo, uv_map, "REPEAT")
    nodes = material.node_tree.nodes
    links = material.node_tree.links
    shader = next(n for n in nodes if n.bl_idname == "ShaderNodeBsdfPrincipled")
    colour = next(n for n in nodes if n.bl_idname == "ShaderNodeTexImage")
    uv_node = next(n for n in nodes if n.bl_idname == "ShaderNodeUVMap")
    # UV -> Mapping (scale = repeat) -> both textures, so they repeat together.
    mapping = nodes.new("ShaderNodeMapping")
    mapping.inputs["Scale"].default_value = (repeat, repeat, 1.0)
    mapping.location = uv_node.location
    uv_node.location.x -= 200
    links.new(uv_node.outputs["UV"], mapping.inputs["Vector"])
    links.new(mapping.outputs["Vector"], colour.inputs["Vector"])

    normal.colorspace_settings.name = "Non-Color"  # a normal map is data, not colour
    texture = nodes.new("ShaderNodeTexImage")
    texture.image = normal
    texture.extension = "REPEAT"
    texture.location = (colour.location.x, colour.location.y - 300)
    links.new(mapping.outputs["Vector"], texture.inputs["Vector"])
    normal_map = nodes.new("ShaderNodeNormalMap")
    normal_map.space = "TANGENT"
    normal_map.uv_map = uv_map
    normal_map.location = (shader.location.x - 200, shader.location.y - 300)
    encoded = texture.outputs["Color"]
    if green_down:
        split = nodes.new("ShaderNodeSeparateColor")
        flip = nodes.new("ShaderNodeMath")
        flip.operation = "SUBTRACT"
        flip.inputs[0].default_value = 1.0
        join = nodes.new("ShaderNodeCombineColor")
        links.new(encoded, split.inputs["Color"])
        links.new(split.outputs["Red"], join.inputs["Red"])
        links.new(split.outputs["Green"], flip.inputs[1])
        links.new(flip.outputs["Value"], join.inputs["Green"])
        links.new(split.outputs["Blue"], join.inputs["Blue"])
        encoded = join.outputs["Color"]
    links.new(encoded, normal_map.inputs["Color"])
    links.new(normal_map.outputs["Normal"], shader.inputs["Normal"])
    return material


def assign_everywhere(obj: bpy.types.Object, material: bpy.types.Material) -> None:
    """Put ``material`` in every material slot of ``obj`` (a first slot if it has none)."""
    if obj.material_slots:
        for slot in obj.material_slots:
            slot.material = material
    else:
        obj.data.materials.append(material)
