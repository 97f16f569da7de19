"""The scene the Bake Texture checks (bake_checks.py) use, and what each camera sees of the
cube's texels found independently of the add-on: Blender's own ray casts through every
pixel centre, and the cube's UV triangles searched with mathutils. Runs in Blender.

The target "Cube" is a cube (size 2, Blender's default UV layout: a cross of six squares)
with a box sticking out of its front in the same mesh. Camera A looks at it from the front
right above (faces +X, -Y, +Z), camera B from the back left above (-X, +Y, +Z). From A,
the box hides part of the cube's front (the object hiding itself), and another object,
"Occluder", halfway between A and the cube hides part of its top; nothing sees the bottom
(-Z).
"""

from __future__ import annotations

from dataclasses import dataclass

import bmesh
import bpy
import numpy as np
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Matrix, Vector
from mathutils.geometry import barycentric_transform, intersect_point_tri_2d
from scene_geometry import pixel_rays

WIDTH, HEIGHT = 64, 48
TEXTURE = 128
CAMERAS = {"A": (4.0, -5.0, 5.0), "B": (-4.0, 5.0, 5.0)}
# What a pixel's ray hits when it is not a polygon of the cube.
NOTHING, OTHER = -1, -2
# How far (world units) the surfaces that the pixels around a hidden texel show must be
# from it for it to count as clearly hidden: about three pixels at the cube's distance.
HIDDEN_CLEARANCE = 0.25


def build_scene() -> None:
    scene = bpy.context.scene
    bpy.ops.mesh.primitive_cube_add(size=0.5, location=(2.0, -2.5, 2.5))
    bpy.context.active_object.name = "Occluder"
    cube = bpy.data.objects.new("Cube", target_mesh())
    scene.collection.objects.link(cube)
    for name, location in CAMERAS.items():
        camera = bpy.data.objects.new(name, bpy.data.cameras.new(name))
        scene.collection.objects.link(camera)
        camera.location = location
        camera.rotation_euler = (-Vector(location)).to_track_quat("-Z", "Y").to_euler()
    scene.camera = bpy.data.objects["A"]
    render = scene.render
    render.resolution_x, render.resolution_y, render.resolution_percentage = WIDTH, HEIGHT, 100
    bpy.context.view_layer.update()


def target_mesh() -> bpy.types.Mesh:
    """A cube of size 2 with Blender's default UV cross, and in the same mesh a box
    sticking out of its -Y face (its own UV cross shrunk into the texture's free left
    strip), which hides part of that face from camera A."""
    mesh = bmesh.new()
    uv = mesh.loops.layers.uv.new("UVMap")
    bmesh.ops.create_cube(mesh, size=2.0, calc_uvs=True)
    bump = bmesh.ops.create_cube(
        mesh, size=0.6, matrix=Matrix.Translation((0.3, -1.25, -0.2)), calc_uvs=True
    )
    for face in {face for vertex in bump["verts"] for face in vertex.link_faces}:
        for loop in face.loops:
            loop[uv].uv = loop[uv].uv * 0.125
    data = bpy.data.meshes.new("Cube")
    mesh.to_mesh(data)
    mesh.free()
    return data


@dataclass(frozen=True)
class CubeTexels:
    """The texels of the cube's UV map: index (row-major, top row first), surface point,
    polygon."""

    index: np.ndarray
    points: np.ndarray
    polygons: np.ndarray


def cube_texels() -> CubeTexels:
    """Every texel centre inside one of the cube's UV triangles, mapped to the surface
    with mathutils (not with the add-on's rasteriser)."""
    cube = bpy.data.objects["Cube"]
    mesh = cube.data
    mesh.calc_loop_triangles()
    uv_layer = mesh.uv_layers.active.data
    triangles = [
        (
            [uv_layer[loop].uv.to_3d() for loop in tri.loops],
            [cube.matrix_world @ mesh.vertices[v].co for v in tri.vertices],
            tri.polygon_index,
        )
        for tri in mesh.loop_triangles
    ]
    index, points, polygons = [], [], []
    for row in range(TEXTURE):
        for column in range(TEXTURE):
            centre = Vector(((column + 0.5) / TEXTURE, 1 - (row + 0.5) / TEXTURE, 0.0))
            for uvs, corners, polygon in triangles:
                if intersect_point_tri_2d(centre.to_2d(), *(uv.to_2d() for uv in uvs)):
                    index.append(row * TEXTURE + column)
                    points.append(barycentric_transform(centre, *uvs, *corners))
                    polygons.append(polygon)
                    break
    return CubeTexels(np.array(index), np.array(points, dtype=np.float64), np.array(polygons))


def cast_pixels(camera: bpy.types.Object) -> list[tuple[int, Vector]]:
    """Per pixel centre (row-major, top row first): the cube polygon its ray hits first
    (`OTHER` for another object, `NOTHING`) and where."""
    scene = bpy.context.scene
    depsgraph = bpy.context.evaluated_depsgraph_get()
    origin = camera.matrix_world.translation
    hits = []
    for _row, _column, direction in pixel_rays(scene, camera, WIDTH, HEIGHT):
        hit, location, _, polygon, obj, _ = scene.ray_cast(depsgraph, origin, direction)
        if not hit:
            polygon = NOTHING
        elif obj.name != "Cube":
            polygon = OTHER
        hits.append((polygon, location))
    return hits


@dataclass(frozen=True)
class Sight:
    """What one camera sees of the cube's texels (rows as in CubeTexels)."""

    clearly_seen: np.ndarray  # all four pixel centres around it show its own face
    clearly_unseen: np.ndarray  # back face, outside the picture, or no pixel near shows it
    hidden_by_itself: np.ndarray  # facing, but the pixels near it show other cube faces
    hidden_by_other: np.ndarray  # facing, but the pixels near it show another object
    x: np.ndarray  # position in the picture, pixels from the left
    y: np.ndarray  # pixels from the top


def sight(camera: bpy.types.Object, texels: CubeTexels) -> Sight:
    scene = bpy.context.scene
    cast = cast_pixels(camera)
    hits = np.array([polygon for polygon, _ in cast]).reshape(HEIGHT, WIDTH)
    locations = np.array(
        [location if polygon != NOTHING else (np.inf,) * 3 for polygon, location in cast]
    ).reshape(HEIGHT, WIDTH, 3)
    mesh = bpy.data.objects["Cube"].data
    origin = np.array(camera.matrix_world.translation)
    normals = np.array([mesh.polygons[p].normal for p in texels.polygons])
    facing = np.einsum("nd,nd->n", normals, origin - texels.points) > 0
    projected = np.array([world_to_camera_view(scene, camera, Vector(p)) for p in texels.points])
    x, y = projected[:, 0] * WIDTH, (1 - projected[:, 1]) * HEIGHT
    x0, y0 = np.floor(x - 0.5).astype(int), np.floor(y - 0.5).astype(int)
    inside = (x0 >= 1) & (x0 + 2 < WIDTH) & (y0 >= 1) & (y0 + 2 < HEIGHT)
    # The 4 x 4 pixels around each position: its four nearest in the middle, and a ring of
    # one pixel around them, so that "unseen" keeps a pixel away from where it is seen
    # (where a tolerance of a fraction of a pixel may decide either way).
    block = np.zeros((len(x), 4, 4), dtype=np.int64)
    nearest = np.full(len(x), np.inf)
    for dy in range(-1, 3):
        for dx in range(-1, 3):
            rows, columns = np.clip(y0 + dy, 0, HEIGHT - 1), np.clip(x0 + dx, 0, WIDTH - 1)
            block[:, dy + 1, dx + 1] = hits[rows, columns]
            away = np.linalg.norm(locations[rows, columns] - texels.points, axis=1)
            nearest = np.minimum(nearest, away)
    shows = block == texels.polygons[:, None, None]
    in_front = facing & inside
    # Hidden, and by something that does not touch it there: at a concave crease the face
    # in front meets the hidden one, and which of them a pixel near the crease shows
    # depends on a fraction of a pixel.
    nowhere = ~shows.any(axis=(1, 2)) & (nearest > HIDDEN_CLEARANCE)
    # Well outside the picture (a pixel or more): unseen; nearer its border: neither.
    outside = (x < -1) | (x > WIDTH + 1) | (y < -1) | (y > HEIGHT + 1)
    return Sight(
        clearly_seen=in_front & shows[:, 1:3, 1:3].all(axis=(1, 2)),
        clearly_unseen=~facing | outside | (in_front & nowhere),
        hidden_by_itself=in_front & nowhere & (block >= 0).all(axis=(1, 2)),
        hidden_by_other=in_front & nowhere & (block == OTHER).all(axis=(1, 2)),
        x=x,
        y=y,
    )


def bilinear(picture: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N, C) ``picture`` ((H, W, C), top row first) at pixel positions, bilinear between
    pixel centres (positions whose four pixels lie inside the picture)."""
    gx, gy = x - 0.5, y - 0.5
    x0, y0 = np.floor(gx).astype(int), np.floor(gy).astype(int)
    fx, fy = (gx - x0)[:, None], (gy - y0)[:, None]
    p = picture.astype(np.float64)
    return (
        p[y0, x0] * (1 - fx) * (1 - fy)
        + p[y0, x0 + 1] * fx * (1 - fy)
        + p[y0 + 1, x0] * (1 - fx) * fy
        + p[y0 + 1, x0 + 1] * fx * fy
    )


def hit_uvs(camera: bpy.types.Object) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel centre (row-major, top row first): whether its ray first hits the cube,
    and the UV there (mathutils' barycentric transform of the hit point)."""
    cube = bpy.data.objects["Cube"]
    mesh = cube.data
    mesh.calc_loop_triangles()
    uv_layer = mesh.uv_layers.active.data
    by_polygon: dict[int, list[tuple[list[Vector], list[Vector]]]] = {}
    for tri in mesh.loop_triangles:
        corners = [cube.matrix_world @ mesh.vertices[v].co for v in tri.vertices]
        uvs = [uv_layer[loop].uv.to_3d() for loop in tri.loops]
        by_polygon.setdefault(tri.polygon_index, []).append((corners, uvs))
    hits = cast_pixels(camera)
    on_cube = np.array([polygon >= 0 for polygon, _ in hits])
    uv = np.zeros((len(hits), 2))
    for pixel, (polygon, location) in enumerate(hits):
        if polygon >= 0:
            corners, uvs = min(by_polygon[polygon], key=lambda pair: _outside(location, pair[0]))
            uv[pixel] = barycentric_transform(location, *corners, *uvs).to_2d()
    return on_cube, uv


def _outside(point: Vector, corners: list[Vector]) -> float:
    """How far ``point`` (on the triangle's plane) lies outside the triangle, in barycentric
    terms: 0 inside."""
    a, b, c = corners
    unit = (Vector((1, 0, 0)), Vector((0, 1, 0)), Vector((0, 0, 1)))
    weights = barycentric_transform(point, a, b, c, *unit)
    return -min(0.0, min(weights))
