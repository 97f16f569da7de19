"""A mesh object's triangles in world space with its UVs, as `uvbake` needs them.

The mesh is the evaluated one (modifiers, shape keys and animation applied, as the
viewport shows it) split into Blender's own triangles (``loop_triangles``, which Cycles
renders too), with the UVs of the mesh's active UV map (the one selected in Object Data
properties > UV Maps): that is the map the texture is baked on.
"""

from __future__ import annotations

import bpy
import numpy as np

from .uvbake.texels import MeshData

__all__ = ["active_uv_map", "mesh_data"]


def active_uv_map(obj: bpy.types.Object) -> str | None:
    """The name of the mesh's active UV map, or None when it has none."""
    layer = obj.data.uv_layers.active
    return layer.name if layer is not None else None


def mesh_data(obj: bpy.types.Object, depsgraph: bpy.types.Depsgraph, uv_map: str) -> MeshData:
    """The evaluated triangles of ``obj`` in world space with the UVs of ``uv_map``. A
    modifier that drops the UV map leaves the mesh without texels (no triangles)."""
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    try:
        mesh.calc_loop_triangles()
        count = len(mesh.loop_triangles)
        loops = np.empty(count * 3, dtype=np.int32)
        mesh.loop_triangles.foreach_get("loops", loops)
        corner_vertices = np.empty(count * 3, dtype=np.int32)
        mesh.loop_triangles.foreach_get("vertices", corner_vertices)
        local = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
        mesh.vertices.foreach_get("co", local)
        layer = mesh.uv_layers.get(uv_map)
        if layer is None:
            return MeshData(positions=np.zeros((0, 3, 3)), uvs=np.zeros((0, 3, 2)))
        uvs = np.empty(len(mesh.loops) * 2, dtype=np.float32)
        layer.data.foreach_get("uv", uvs)
    finally:
        evaluated.to_mesh_clear()
    matrix = np.array(evaluated.matrix_world, dtype=np.float64)
    points = local.reshape(-1, 3).astype(np.float64) @ matrix[:3, :3].T + matrix[:3, 3]
    positions = points[corner_vertices].reshape(count, 3, 3)
    corner_uvs = uvs.reshape(-1, 2).astype(np.float64)[loops].reshape(count, 3, 2)
    if np.linalg.det(matrix[:3, :3]) < 0:
        # A mirroring transform turns the winding around; swapping two corners restores
        # counter-clockwise seen from the side the normal points to.
        positions = positions[:, [0, 2, 1]]
        corner_uvs = corner_uvs[:, [0, 2, 1]]
    return MeshData(positions=positions, uvs=corner_uvs)
