"""The Blender add-on's texture-space geometry (clients/blender/tether_blender/uvbake), on
analytic cases: a square plane with known UVs seen by known cameras. Pure numpy, no bpy:
the package is imported on its own, as the add-on's worker thread uses it."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "clients/blender/tether_blender"))

from uvbake.bleed import dilate  # noqa: E402
from uvbake.camera import ViewCamera  # noqa: E402
from uvbake.canvas import MISSING_COLOUR, Canvas, conditioning  # noqa: E402
from uvbake.orbit import bounding_sphere, fit_distance, orbit_matrices  # noqa: E402
from uvbake.raster import rasterise  # noqa: E402
from uvbake.screen import clip_in_front, surfaces_in_view  # noqa: E402
from uvbake.texels import MeshData, texels_of, uv_to_pixels  # noqa: E402
from uvbake.visibility import observe  # noqa: E402

SIZE = 16  # texels per side
BACKGROUND = 1e10  # Blender's Depth pass where nothing was hit


def plane(half: float = 1.0, z: float = 0.0, up: bool = True) -> MeshData:
    """The square [-half, half]^2 at height z, two triangles, normal +Z (or -Z), with UV
    (u, v) at the point (x, y) = ((2u - 1) half, (2v - 1) half)."""
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float64)
    xyz = np.column_stack([(2 * uv - 1) * half, np.full(4, z)])
    order = [[0, 1, 2], [0, 2, 3]] if up else [[0, 2, 1], [0, 3, 2]]
    return MeshData(positions=xyz[order], uvs=uv[order])


def look_at(position: list[float], target: list[float]) -> np.ndarray:
    """Camera-to-world matrix: -Z toward ``target``, +Y as close to world +Y... or +Z up."""
    back = np.asarray(position, float) - np.asarray(target, float)
    back /= np.linalg.norm(back)
    up_hint = np.array([0.0, 1.0, 0.0]) if abs(back[2]) > 0.99 else np.array([0.0, 0.0, 1.0])
    right = np.cross(up_hint, back)
    right /= np.linalg.norm(right)
    matrix = np.eye(4)
    matrix[:3, 0], matrix[:3, 1], matrix[:3, 2] = right, np.cross(back, right), back
    matrix[:3, 3] = position
    return matrix


def perspective(camera_to_world: np.ndarray, width: int, height: int, focal: float) -> ViewCamera:
    """A pinhole camera with a focal length of ``focal`` pixels (Blender's matrix layout)."""
    near, far = 0.1, 100.0
    projection = np.zeros((4, 4))
    projection[0, 0], projection[1, 1] = 2 * focal / width, 2 * focal / height
    projection[2, 2] = -(far + near) / (far - near)
    projection[2, 3] = -2 * far * near / (far - near)
    projection[3, 2] = -1.0
    return ViewCamera(camera_to_world, projection @ np.linalg.inv(camera_to_world), width, height)


def orthographic(camera_to_world: np.ndarray, width: int, height: int, scale: float) -> ViewCamera:
    """An orthographic camera showing ``scale`` world units across its width."""
    near, far = 0.1, 100.0
    projection = np.eye(4)
    projection[0, 0], projection[1, 1] = 2 / scale, 2 / (scale * height / width)
    projection[2, 2], projection[2, 3] = -2 / (far - near), -(far + near) / (far - near)
    return ViewCamera(camera_to_world, projection @ np.linalg.inv(camera_to_world), width, height)


def plane_depth(camera: ViewCamera, mesh: MeshData) -> np.ndarray:
    """The Depth pass of ``camera`` seeing ``mesh`` (a plane), by intersecting each pixel
    centre's ray with the plane analytically; background where it misses the square."""
    columns, rows = np.meshgrid(np.arange(camera.width) + 0.5, np.arange(camera.height) + 0.5)
    start, direction = camera.rays(columns.ravel(), rows.ravel())
    corner = mesh.positions[0, 0]
    normal = np.cross(mesh.positions[0, 1] - corner, mesh.positions[0, 2] - corner)
    t = ((corner - start) @ normal) / (direction @ normal)
    hit = start + t[:, None] * direction
    half = np.abs(mesh.positions[..., :2]).max()
    inside = (np.abs(hit[:, :2]) <= half).all(axis=1) & (t > 0)
    return np.where(inside, camera.planar_depth(hit), BACKGROUND).reshape(camera.height, -1)


def texel_uv(index: np.ndarray, size: int = SIZE) -> np.ndarray:
    """The UV of texel centres (row-major index, rows from the top)."""
    rows, columns = np.divmod(index, size)
    return np.column_stack([(columns + 0.5) / size, 1 - (rows + 0.5) / size])


# -- rasterising and texels -----------------------------------------------------------------


def test_two_triangles_covering_the_uv_square_give_every_texel_once() -> None:
    texels = texels_of(plane(), SIZE)
    assert np.array_equal(texels.index, np.arange(SIZE * SIZE))
    uv = texel_uv(texels.index)
    expected = np.column_stack([2 * uv - 1, np.zeros(len(uv))])
    assert np.abs(texels.positions - expected).max() < 1e-12
    assert np.array_equal(texels.normals, np.tile([0.0, 0.0, 1.0], (SIZE * SIZE, 1)))


def test_a_triangle_covers_the_centres_inside_it_and_on_its_edges() -> None:
    # Lower-left half of an 8x8 grid: centres with column <= row (the diagonal's centres
    # lie exactly on the edge and count as inside).
    fragments = rasterise(np.array([[[0.0, 0.0], [0.0, 8.0], [8.0, 8.0]]]), 8, 8)
    rows, columns = np.divmod(fragments.pixel, 8)
    assert len(fragments.pixel) == 36 and (columns <= rows).all()
    centres = np.column_stack([columns + 0.5, rows + 0.5])
    corners = np.array([[0.0, 0.0], [0.0, 8.0], [8.0, 8.0]])
    assert np.abs(fragments.barycentric @ corners - centres).max() < 1e-12


def test_triangles_partly_outside_the_grid_and_without_area_cover_only_what_they_can() -> None:
    corners = np.array(
        [[[-4.0, -4.0], [12.0, -4.0], [-4.0, 12.0]], [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]]
    )
    fragments = rasterise(corners, 4, 4)
    assert set(fragments.triangle.tolist()) == {0}
    assert sorted(fragments.pixel.tolist()) == list(range(16))


def test_triangles_are_rasterised_in_chunks_without_losing_any(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from uvbake import raster

    corners = uv_to_pixels(plane().uvs, 64)
    whole = raster.rasterise(corners, 64, 64)
    monkeypatch.setattr(raster, "CHUNK", 100)  # smaller than one triangle's box
    chunked = raster.rasterise(corners, 64, 64)
    assert np.array_equal(whole.pixel, chunked.pixel)
    assert np.array_equal(whole.triangle, chunked.triangle)


# -- cameras --------------------------------------------------------------------------------


def test_perspective_camera_projects_rays_and_pixel_sizes_analytically() -> None:
    camera = perspective(look_at([0, 0, 4], [0, 0, 0]), 40, 20, focal=20.0)
    x, y, w = camera.project(np.array([[0.0, 0.0, 0.0], [4.0, 1.0, 0.0], [0.0, 0.0, 2.0]]))
    # At depth 4 one pixel is 4 / 20 = 0.2 units: x = 4 is 20 pixels right of the centre,
    # y = 1 (up in the picture, the camera's +Y is world +Y) 5 pixels above it.
    assert np.allclose(x, [20, 40, 20]) and np.allclose(y, [10, 5, 10])
    assert np.allclose(w, [4, 4, 2])
    assert np.allclose(camera.pixel_size(np.array([4.0, 2.0])), [0.2, 0.1])
    assert not camera.orthographic
    start, direction = camera.rays(np.array([30.0]), np.array([10.0]))
    hit = start - direction * (start[:, 2:] / direction[:, 2:])
    assert np.allclose(hit, [[2.0, 0.0, 0.0]])


def test_orthographic_camera_has_one_pixel_size_and_parallel_rays() -> None:
    camera = orthographic(look_at([0, 0, 4], [0, 0, 0]), 40, 20, scale=4.0)
    assert camera.orthographic
    assert np.allclose(camera.pixel_size(np.array([1.0, 9.0])), [0.1, 0.1])
    x, y, _ = camera.project(np.array([[1.0, 0.5, 0.0]]))
    assert np.allclose([x[0], y[0]], [30, 5])
    _, direction = camera.rays(np.array([0.5, 39.5]), np.array([0.5, 19.5]))
    assert np.allclose(direction / np.linalg.norm(direction, axis=1)[:, None], [0, 0, -1])


# -- visibility -----------------------------------------------------------------------------


def ramp(camera: ViewCamera) -> np.ndarray:
    """A picture whose red is the pixel column and green the row (bilinear reads it back
    exactly), blue 7."""
    columns, rows = np.meshgrid(np.arange(camera.width), np.arange(camera.height))
    return np.stack([columns, rows, np.full_like(rows, 7)], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("kind", ["perspective", "orthographic"])
def test_a_camera_facing_the_plane_sees_every_texel_at_its_projection(kind: str) -> None:
    mesh = plane()
    pose = look_at([0, 0, 3], [0, 0, 0])
    if kind == "perspective":
        camera = perspective(pose, 48, 48, focal=60.0)  # the square fills 40 pixels
    else:
        camera = orthographic(pose, 48, 48, scale=2.4)
    texels = texels_of(mesh, SIZE)
    seen = observe(texels, camera, plane_depth(camera, mesh), math.radians(80))
    assert seen.seen.all()
    x, y, _ = camera.project(texels.positions)
    colours = seen.colours(ramp(camera))
    assert np.abs(colours[:, 0] - (x - 0.5)).max() < 1e-9
    assert np.abs(colours[:, 1] - (y - 0.5)).max() < 1e-9
    assert np.allclose(colours[:, 2], 7)
    # Head-on, every texel weighs its area in pixels: 1 / pixel_size^2 (one pixel of
    # depth 3 is 3 / 60 units wide, or 2.4 / 48 for the orthographic camera).
    assert np.allclose(seen.weight, 1 / 0.05**2)


def test_an_occluder_hides_texels_and_the_background_gives_them_no_colour() -> None:
    mesh = plane()
    camera = perspective(look_at([0, 0, 3], [0, 0, 0]), 48, 48, focal=60.0)
    depth = plane_depth(camera, mesh)
    depth[10:20, 10:20] = 1.5  # something halfway to the camera
    texels = texels_of(mesh, SIZE)
    seen = observe(texels, camera, depth, math.radians(80))
    x, y, _ = camera.project(texels.positions)
    hidden = (x > 10.5) & (x < 19.5) & (y > 10.5) & (y < 19.5)  # all four pixels covered
    clear = (x < 9.5) | (x > 20.5) | (y < 9.5) | (y > 20.5)  # none covered
    assert not seen.seen[hidden].any() and hidden.sum() > 4
    assert seen.seen[clear].all()
    # Partly hidden texels take colour only from the pixels that show the plane.
    colours = seen.colours(np.where(depth[..., None] < 2, 255, 10).astype(np.uint8))
    assert np.allclose(colours[seen.seen], 10)
    # Nothing rendered (the Depth pass is background everywhere): nothing seen.
    assert not observe(texels, camera, np.full_like(depth, BACKGROUND), 1.4).seen.any()


def test_back_faces_and_grazing_faces_are_not_seen() -> None:
    camera = perspective(look_at([0, 0, -3], [0, 0, 0]), 48, 48, focal=60.0)
    mesh = plane()  # faces +Z, the camera is below it
    seen = observe(texels_of(mesh, SIZE), camera, plane_depth(camera, mesh), math.radians(80))
    assert not seen.seen.any()
    flipped = plane(up=False)
    assert observe(texels_of(flipped, SIZE), camera, plane_depth(camera, flipped), 1.4).seen.all()

    # Seen from 60 degrees off its normal (orthographic: the same angle everywhere): within
    # 70 degrees, not within 50.
    position = [0, -3 * math.sin(math.radians(60)), 3 * math.cos(math.radians(60))]
    oblique = orthographic(look_at(position, [0, 0, 0]), 64, 64, scale=3.0)
    texels = texels_of(mesh, SIZE)
    depth = plane_depth(oblique, mesh)
    assert observe(texels, oblique, depth, math.radians(70)).seen.all()
    assert not observe(texels, oblique, depth, math.radians(50)).seen.any()


# -- blending, marks and margins ------------------------------------------------------------


def test_views_blend_by_texel_area_in_pixels_and_unseen_texels_stay_marked() -> None:
    mesh = plane()
    texels = texels_of(mesh, SIZE)
    canvas = Canvas(texels)
    near = perspective(look_at([0, 0, 3], [0, 0, 0]), 48, 48, focal=60.0)
    far = perspective(look_at([0, 0, 6], [0, 0, 0]), 48, 48, focal=60.0)
    for camera, colour in ((near, 200), (far, 50)):
        depth = plane_depth(camera, mesh)
        depth[:, :24] = 1.0  # the left half of each picture is hidden
        picture = np.full((48, 48, 3), colour, dtype=np.uint8)
        canvas.add(observe(texels, camera, depth, math.radians(80)), picture)
    x_near, _, _ = near.project(texels.positions)
    x_far, _, _ = far.project(texels.positions)
    both = (x_near > 24.5) & (x_far > 24.5)
    only_far = (x_near < 23.5) & (x_far > 24.5)
    none = (x_near < 23.5) & (x_far < 23.5)
    colours = canvas.colours()
    # Twice as far: pixels twice as wide, a quarter of the weight: (4 * 200 + 50) / 5.
    assert np.allclose(colours[both], 170)
    assert np.allclose(colours[only_far], 50)
    assert np.array_equal(colours[none], np.tile(MISSING_COLOUR, (none.sum(), 1)))
    assert none.sum() > 0 and canvas.painted_share() == pytest.approx(1 - none.mean())

    texture, mask = canvas.finished(margin=0)
    flat = texture.reshape(-1, 4)
    assert np.array_equal(flat[texels.index[none]], np.tile([*MISSING_COLOUR, 0], (none.sum(), 1)))
    assert (flat[texels.index[~none], 3] == 255).all()
    assert np.array_equal(mask.ravel()[texels.index] == 255, none)


def test_margin_bleeds_island_colours_outward_by_that_many_texels() -> None:
    # An island covering the left half of the UV square: columns 0..7 of 16.
    half = MeshData(
        positions=plane().positions,
        uvs=plane().uvs * [0.5, 1.0],
    )
    texels = texels_of(half, SIZE)
    canvas = Canvas(texels)
    camera = perspective(look_at([0, 0, 3], [0, 0, 0]), 48, 48, focal=60.0)
    canvas.add(observe(texels, camera, plane_depth(camera, half), 1.4), ramp(camera))
    for margin in (0, 3):
        alpha = canvas.finished(margin)[0][..., 3]
        assert (alpha[:, : 8 + margin] == 255).all() and (alpha[:, 8 + margin :] == 0).all()
    texture = canvas.finished(3)[0]
    # The first ring copies the island's last column (its own neighbours' mean).
    assert np.abs(texture[1:-1, 8, :3].astype(int) - texture[1:-1, 7, :3]).max() <= 1


def test_dilate_fills_empty_pixels_from_their_filled_neighbours() -> None:
    values = np.zeros((5, 5, 1))
    filled = np.zeros((5, 5), dtype=bool)
    values[2, 2], filled[2, 2] = 8.0, True
    grown, reached = dilate(values, filled, 1)
    assert reached.sum() == 9 and np.all(grown[1:4, 1:4] == 8.0)
    assert values[1, 1] == 0 and not filled[1, 1]  # the inputs stay as they were
    _, reached = dilate(values, filled, 5)
    assert reached.all()


# -- what a later view is conditioned on ----------------------------------------------------


def test_pixels_show_the_uv_under_them_with_perspective_correct_interpolation() -> None:
    mesh = plane()
    camera = perspective(look_at([0.3, -2.5, 1.6], [0, 0, 0]), 64, 48, focal=50.0)
    depth = plane_depth(camera, mesh)
    surfaces = surfaces_in_view([mesh], camera, depth)
    shows = depth.ravel() < BACKGROUND
    assert np.array_equal(surfaces.target >= 0, shows)
    columns, rows = np.meshgrid(np.arange(64) + 0.5, np.arange(48) + 0.5)
    start, direction = camera.rays(columns.ravel()[shows], rows.ravel()[shows])
    hit = start - direction * (start[:, 2:] / direction[:, 2:])
    assert np.abs(surfaces.uv[shows] - (hit[:, :2] + 1) / 2).max() < 1e-9
    # Another object in front: the pixels it covers show no target.
    depth[:10] = 0.5
    hidden = surfaces_in_view([mesh], camera, depth)
    assert (hidden.target.reshape(48, 64)[:10] == -1).all()


def test_a_triangle_through_the_camera_plane_keeps_its_part_in_front() -> None:
    camera = perspective(look_at([0, 0, 0], [0, 1, 0]), 32, 32, focal=16.0)  # looks along +Y
    positions = np.array([[[-1.0, -1.0, 0.0], [1.0, 3.0, 0.0], [-1.0, 3.0, 0.0]]])
    uvs = np.array([[[0.0, 0.0], [1.0, 1.0], [0.0, 1.0]]])
    clipped, clipped_uvs = clip_in_front(positions, uvs, camera, near=0.5)
    assert camera.planar_depth(clipped.reshape(-1, 3)).min() >= 0.5 - 1e-12
    area = 0.5 * np.abs(np.cross(clipped[:, 1] - clipped[:, 0], clipped[:, 2] - clipped[:, 0]))
    # The part with y >= 0.5 of the triangle between x = -1 and the line x = (y + 1) / 2 - 1:
    # the trapezoid from y = 0.5 (width 0.75) to y = 3 (width 2).
    assert area[:, 2].sum() == pytest.approx((0.75 + 2) / 2 * 2.5)
    # UVs follow the positions (u = (x + 1) / 2, v = (y + 1) / 4 on this triangle).
    assert np.allclose(clipped_uvs[..., 0], (clipped[..., 0] + 1) / 2)
    assert np.allclose(clipped_uvs[..., 1], (clipped[..., 1] + 1) / 4)


def test_a_later_view_keeps_what_earlier_views_painted_and_repaints_the_rest() -> None:
    mesh = plane()
    texels = texels_of(mesh, SIZE)
    canvas = Canvas(texels)
    first = perspective(look_at([0, 0, 3], [0, 0, 0]), 48, 48, focal=60.0)
    depth = plane_depth(first, mesh)
    depth[:, 24:] = 1.0  # the first view sees the left half of the plane only
    canvas.add(observe(texels, first, depth, 1.4), ramp(first))

    second = perspective(look_at([0, -2.0, 2.5], [0, 0, 0]), 64, 48, focal=50.0)
    second_depth = plane_depth(second, mesh)
    surfaces = surfaces_in_view([mesh], second, second_depth)
    result = conditioning([canvas], surfaces, 64, 48)
    mask = result.mask.ravel()
    on_plane = surfaces.target >= 0
    u = surfaces.uv[:, 0]
    assert (mask[~on_plane] == 255).all()  # not a target: painted freely
    assert (mask[on_plane & (u < 0.45)] == 0).all()  # painted by the first view: kept
    assert (mask[on_plane & (u > 0.55)] == 255).all()  # never painted: repainted
    assert result.kept == int((mask == 0).sum()) and result.new > 0
    # Kept pixels carry the texture's colours: the first picture's ramp at the point.
    kept = np.nonzero(mask == 0)[0]
    expected, _ = canvas.sample(surfaces.uv[kept])
    assert np.abs(result.init_image.reshape(-1, 3)[kept] - expected).max() <= 0.5


# -- orbit ----------------------------------------------------------------------------------


def test_orbit_cameras_surround_the_sphere_and_look_at_its_centre() -> None:
    points = np.array([[-1.0, -2.0, 0.0], [1.0, 2.0, 1.0], [0.0, 0.0, 0.5]])
    centre, radius = bounding_sphere(points)
    assert np.allclose(centre, [0, 0, 0.5]) and radius == pytest.approx(math.sqrt(1 + 4 + 0.25))
    camera = perspective(np.eye(4), 64, 48, focal=40.0)
    projection = camera.world_to_clip  # the camera at the origin: the projection itself
    distance = fit_distance(radius, projection)
    # The narrower side is the height: half angle atan(24 / 40); the sphere fills it.
    assert radius / distance == pytest.approx(math.sin(math.atan(24 / 40)) / 1.05)
    matrices = orbit_matrices(centre, distance, 4, math.radians(30), math.radians(-90))
    for k, matrix in enumerate(matrices):
        position = matrix[:3, 3]
        assert np.linalg.norm(position - centre) == pytest.approx(distance)
        assert np.allclose(-matrix[:3, 2], (centre - position) / distance)  # looks at it
        assert abs(matrix[2, 0]) < 1e-12  # no roll: the camera's X stays horizontal
        assert matrix[2, 1] > 0  # and its Y points up
        assert (position[2] - centre[2]) / distance == pytest.approx(0.5)  # 30 degrees up
        azimuth = math.atan2(position[1] - centre[1], position[0] - centre[0])
        assert math.cos(azimuth - math.radians(-90 + 90 * k)) == pytest.approx(1)
