"""tether.maps against scenes ray-cast analytically in numpy.

The scene: a pinhole camera at the origin looking down -Z (+X right, +Y up), a sphere on
the optical axis in front of a tilted disc (a bounded plane); rays that hit neither are
background. Expectations come from the geometry (exact hit depth and normal per pixel),
never from the functions under test.
"""

from __future__ import annotations

import numpy as np
import pytest
from tether import maps

H, W, FOCAL = 41, 61, 40.0  # odd sizes: the centre pixel's ray is the optical axis
SPHERE_CENTRE, SPHERE_RADIUS = np.array([0.0, 0.0, -5.0]), 1.5
PLANE_NORMAL = np.array([0.3, 0.4, 1.0]) / np.linalg.norm([0.3, 0.4, 1.0])
PLANE_POINT, PLANE_RADIUS = np.array([0.0, 0.0, -9.0]), 5.0
NORMAL_BG = [0.5, 0.5, 1.0]


def _render():
    """Per pixel (top row first): hit point, view-space unit normal, hit mask, sphere mask."""
    col, row = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    rays = np.stack([(col - W / 2) / FOCAL, (H / 2 - row) / FOCAL, -np.ones((H, W))], -1)
    a = (rays * rays).sum(-1)
    b = rays @ SPHERE_CENTRE
    disc = b * b - a * (SPHERE_CENTRE @ SPHERE_CENTRE - SPHERE_RADIUS**2)
    with np.errstate(invalid="ignore"):
        t_sphere = np.where(disc >= 0, (b - np.sqrt(disc)) / a, np.inf)
    with np.errstate(divide="ignore"):
        t_plane = (PLANE_POINT @ PLANE_NORMAL) / (rays @ PLANE_NORMAL)
    on_disc = np.linalg.norm(rays * t_plane[..., None] - PLANE_POINT, axis=-1) < PLANE_RADIUS
    t_plane = np.where((t_plane > 0) & on_disc, t_plane, np.inf)
    sphere = t_sphere < t_plane
    t = np.minimum(t_sphere, t_plane)
    hit = np.isfinite(t)
    points = np.where(hit[..., None], rays * np.where(hit, t, 0)[..., None], np.nan)
    normals = np.where(sphere[..., None], (points - SPHERE_CENTRE) / SPHERE_RADIUS, PLANE_NORMAL)
    normals[~hit] = 0.0
    return points, normals, hit, sphere


POINTS, NORMALS, HIT, SPHERE = _render()
Z = np.where(HIT, -POINTS[..., 2], np.inf)  # planar depth; rays have z = -1, so z = t


def _expected_depth(z=Z, hit=HIT):
    inverse = 1.0 / z[hit]
    grey = np.zeros(z.shape)
    grey[hit] = (inverse - inverse.min()) / (inverse.max() - inverse.min())
    return np.repeat(grey[..., None], 3, axis=2)


def _expected_normals(n=NORMALS, hit=HIT):
    rgb = np.stack([(1 - n[..., 0]) / 2, (1 + n[..., 1]) / 2, (1 + n[..., 2]) / 2], -1)
    rgb[~hit] = NORMAL_BG
    return rgb


def _check_map(out, expected, atol):
    assert out.dtype == np.float32 and out.shape == (H, W, 3) and out.flags.c_contiguous
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(out, expected, atol=atol, rtol=0)


def test_scene_has_all_parts():
    assert SPHERE.sum() > 200 and (HIT & ~SPHERE).sum() > 200 and (~HIT).sum() > 200
    assert np.allclose(np.linalg.norm(NORMALS[HIT], axis=-1), 1)


def test_depth_from_linear_is_normalised_disparity():
    out = maps.depth_from_linear(Z)
    _check_map(out, _expected_depth(), 1e-6)
    assert (out[~HIT] == 0).all()
    # Independent of the formula: nearer is brighter, everywhere.
    order = np.argsort(Z[HIT])
    assert (np.diff(out[..., 0][HIT][order]) <= 1e-7).all()
    assert out[..., 0][HIT].max() == 1 and out[..., 0][HIT].min() == 0
    # The sphere's front point is the nearest thing on the axis: brighter than the plane.
    assert out[H // 2, W // 2, 0] > out[..., 0][HIT & ~SPHERE].max()


@pytest.mark.parametrize("fill", [np.nan, np.inf, -np.inf, 0.0, -3.0])
def test_depth_background_values(fill):
    out = maps.depth_from_linear(np.where(HIT, Z, fill).astype(np.float32))
    _check_map(out, _expected_depth(), 1e-5)


def test_depth_background_mask_and_far_cutoff():
    huge = np.where(HIT, Z, 1e10)  # Blender's Z pass where nothing is hit
    _check_map(maps.depth_from_linear(huge, far=1e9), _expected_depth(), 1e-6)
    _check_map(maps.depth_from_linear(huge, background=~HIT), _expected_depth(), 1e-6)
    # Without either, 1e10 is a surface: the real geometry's contrast changes.
    assert not np.allclose(maps.depth_from_linear(huge), _expected_depth(), atol=1e-2)
    only_sphere = maps.depth_from_linear(Z, far=SPHERE_CENTRE[2] * -1 + SPHERE_RADIUS)
    _check_map(only_sphere, _expected_depth(hit=SPHERE), 1e-6)


def test_depth_single_depth_and_empty():
    flat = np.full((4, 5), 2.0)
    flat[0, 0] = np.inf
    out = maps.depth_from_linear(flat[..., None])
    assert out[0, 0].tolist() == [0, 0, 0] and (out.reshape(-1, 3)[1:] == 1).all()
    assert (maps.depth_from_linear(np.full((3, 3), np.nan)) == 0).all()


def _forward_zbuffer(near, far, reversed_z):
    d = np.where(HIT, far / (far - near) * (1 - near / Z), 1.0)
    return (1 - d if reversed_z else d).astype(np.float32)


@pytest.mark.parametrize("reversed_z", [False, True])
@pytest.mark.parametrize(("near", "far"), [(0.1, 100.0), (0.01, 1000.0), (2.0, 20.0)])
def test_depth_from_buffer_matches_linear(near, far, reversed_z):
    zbuffer = _forward_zbuffer(near, far, reversed_z)
    out = maps.depth_from_buffer(zbuffer, near=near, far=far, reversed_z=reversed_z)
    _check_map(out, _expected_depth(), 1e-4)


def test_depth_from_buffer_opengl_ndc():
    near, far = 0.1, 50.0
    # OpenGL's default projection: clip z and w of an eye-space point at distance Z.
    z = np.where(HIT, Z, far)
    clip_z = (far + near) / (far - near) * z - 2 * far * near / (far - near)
    window = (clip_z / z + 1) / 2  # NDC z = clip z / clip w, w = z; then to [0, 1]
    out = maps.depth_from_buffer(window.astype(np.float32), near=near, far=far)
    _check_map(out, _expected_depth(), 1e-4)


def test_depth_from_buffer_flags_are_not_ignored():
    zbuffer = _forward_zbuffer(0.1, 100.0, reversed_z=True)
    wrong = maps.depth_from_buffer(zbuffer, near=0.1, far=100.0)  # reversed_z forgotten
    assert not np.allclose(wrong, _expected_depth(), atol=0.1)
    out = maps.depth_from_buffer(
        zbuffer[::-1], near=0.1, far=100.0, reversed_z=True, background=~HIT[::-1], bottom_up=True
    )
    _check_map(out, _expected_depth(), 1e-4)


def test_depth_from_positions_uses_planar_depth():
    out = maps.depth_from_positions(POINTS.astype(np.float32))
    _check_map(out, _expected_depth(), 1e-5)
    euclid = np.where(HIT, np.linalg.norm(np.nan_to_num(POINTS), axis=-1), np.inf)
    assert not np.allclose(out, _expected_depth(euclid), atol=1e-3)
    zeros = np.where(HIT[..., None], POINTS, 0.0)  # renderers that write (0, 0, 0)
    rgba = np.concatenate([zeros, np.full((H, W, 1), 7.0)], -1)
    _check_map(maps.depth_from_positions(rgba), _expected_depth(), 1e-6)
    behind = zeros * [1, 1, -1]  # the whole scene behind the camera: nothing visible
    assert (maps.depth_from_positions(behind) == 0).all()


def test_depth_bottom_up_and_float16():
    out = maps.depth_from_linear(Z[::-1], background=~HIT[::-1], bottom_up=True)
    _check_map(out, _expected_depth(), 1e-6)
    _check_map(maps.depth_from_linear(Z.astype(np.float16)), _expected_depth(), 5e-3)


def test_normals_from_view_matches_formula():
    out = maps.normals_from_view(NORMALS)
    _check_map(out, _expected_normals(), 1e-6)
    assert (out[~HIT] == NORMAL_BG).all()
    np.testing.assert_allclose(out[H // 2, W // 2], NORMAL_BG, atol=1e-3)
    cols = np.flatnonzero(SPHERE[H // 2])
    rows = np.flatnonzero(SPHERE[:, W // 2])
    assert out[H // 2, cols[0], 0] > 0.9 and out[H // 2, cols[-1], 0] < 0.1  # red = left
    assert out[rows[0], W // 2, 1] > 0.9 and out[rows[-1], W // 2, 1] < 0.1  # green = up
    assert (out[SPHERE][:, 2] > 0.5).all()  # every visible point faces the camera


def test_normals_renormalised_and_background_kinds():
    scaled = NORMALS * np.linspace(0.5, 3, W)[None, :, None]
    scaled[0, :3] = [np.nan, 0, 1]  # these rows are background in the scene
    scaled[0, 3] = [np.inf, 0, 0]
    scaled[0, 4] = [1e-9, 0, 0]
    assert not HIT[0, :5].any()
    _check_map(maps.normals_from_view(scaled.astype(np.float32)), _expected_normals(), 1e-6)
    garbage = np.where(HIT[..., None], NORMALS, 0.3)
    _check_map(maps.normals_from_view(garbage, background=~HIT), _expected_normals(), 1e-6)


def test_normals_y_down_bottom_up_alpha_float16():
    y_down = NORMALS * [1, -1, 1]
    _check_map(maps.normals_from_view(y_down, y_down=True), _expected_normals(), 1e-6)
    flipped = maps.normals_from_view(NORMALS[::-1], bottom_up=True)
    _check_map(flipped, _expected_normals(), 1e-6)
    rgba = np.concatenate([NORMALS, np.random.default_rng(0).random((H, W, 1))], -1)
    _check_map(maps.normals_from_view(rgba), _expected_normals(), 1e-6)
    _check_map(maps.normals_from_view(NORMALS.astype(np.float16)), _expected_normals(), 2e-3)


def test_normals_legacy_swaps_red_and_blue():
    out = maps.normals_from_view(NORMALS, legacy=True)
    _check_map(out, _expected_normals()[..., ::-1], 1e-6)
    assert (out[~HIT] == [1.0, 0.5, 0.5]).all()


def _rotation(yaw, pitch, roll):
    cy, sy, cp, sp, cr, sr = (f(a) for a in (yaw, pitch, roll) for f in (np.cos, np.sin))
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return ry @ rx @ rz


@pytest.mark.parametrize("scale", [[1, 1, 1], [2.5, 2.5, 2.5], [1, 3, 0.5]])
def test_normals_from_world_equals_view(scale):
    rotation = _rotation(0.7, -0.4, 0.25)
    camera_to_world = np.eye(4)
    camera_to_world[:3, :3] = rotation * scale  # scales the camera's local axes
    camera_to_world[:3, 3] = [4.0, -2.0, 9.0]
    world = NORMALS @ rotation.T  # n_world = R n_view for each pixel
    assert not np.allclose(world[HIT], NORMALS[HIT], atol=0.1)
    out = maps.normals_from_world(world.astype(np.float32), camera_to_world)
    _check_map(out, _expected_normals(), 1e-5)
    legacy = maps.normals_from_world(world, camera_to_world[:3, :3], legacy=True)
    _check_map(legacy, _expected_normals()[..., ::-1], 1e-5)


def test_to_uint8():
    image = np.array([[[0.0, 0.5, 1.0], [0.2, 1 / 255, 0.9999]]], dtype=np.float32)
    assert maps.to_uint8(image).tolist() == [[[0, 128, 255], [51, 1, 255]]]
    assert maps.to_uint8(np.array([[[-1.0, 2.0, 0.0]]])).tolist() == [[[0, 255, 0]]]
    out = maps.to_uint8(maps.normals_from_view(NORMALS))
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    assert out[~HIT].tolist() == [[128, 128, 255]] * int((~HIT).sum())


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: maps.depth_from_linear(np.ones((4, 4, 3))),
            r"depth: expected a 2-D \(H, W\) array or \(H, W, 1\), got shape \(4, 4, 3\)",
        ),
        (
            lambda: maps.depth_from_linear(np.ones((4, 4), dtype=np.uint16)),
            r"depth: expected float16, float32 or float64 values, got uint16",
        ),
        (lambda: maps.depth_from_linear(np.ones((4, 4)), far=0), r"far: must be > 0"),
        (
            lambda: maps.depth_from_linear(np.ones((4, 4)), background=np.ones((4, 4))),
            r"background: expected a bool array of shape \(4, 4\), got float64",
        ),
        (
            lambda: maps.depth_from_linear(np.ones((4, 4)), background=np.ones((4, 5), bool)),
            r"background: .* got bool of shape \(4, 5\)",
        ),
        (
            lambda: maps.depth_from_buffer(np.ones((2, 2)), near=1.0, far=0.5),
            r"near: must be > 0 and < far \(got near=1.0, far=0.5\)",
        ),
        (lambda: maps.depth_from_buffer(np.ones((2, 2)), near=0.0, far=10.0), r"near: must be > 0"),
        (
            lambda: maps.depth_from_buffer(np.ones((2, 2)), near=0.1, far=np.inf),
            r"far: must be finite",
        ),
        (
            lambda: maps.depth_from_buffer(np.full((2, 2), 5.0), near=0.1, far=10.0),
            r"zbuffer: expected depth-buffer values in \[0, 1\]",
        ),
        (
            lambda: maps.depth_from_positions(np.ones((4, 4))),
            r"positions: expected an \(H, W, 3\) or \(H, W, 4\) array, got shape \(4, 4\)",
        ),
        (
            lambda: maps.normals_from_view(np.ones((4, 4, 2))),
            r"normals: expected an \(H, W, 3\) or \(H, W, 4\) array, got shape \(4, 4, 2\)",
        ),
        (
            lambda: maps.normals_from_view(np.ones((0, 4, 3))),
            r"normals: expected .* got shape \(0, 4, 3\)",
        ),
        (
            lambda: maps.normals_from_world(np.ones((4, 4, 3)), np.eye(3)[:2]),
            r"camera_to_world: expected a finite 4x4 \(or 3x3\) matrix, got shape \(2, 3\)",
        ),
        (
            lambda: maps.normals_from_world(np.ones((4, 4, 3)), np.diag([1.0, 0, 1, 1])),
            r"camera_to_world: rotation part is singular",
        ),
        (lambda: maps.to_uint8(np.full((2, 2, 3), np.nan)), r"image: contains NaN"),
    ],
)
def test_errors_name_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()
