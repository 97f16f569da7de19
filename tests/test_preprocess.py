"""Preprocessors, resize modes and inpainting: on their own and through a real server."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import tether
from tether_server import resize

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from scene import render  # noqa: E402  (the examples' numpy-rendered sphere on a floor)

SIZE = 64


@pytest.fixture(scope="module")
def client(server):
    with tether.Client(server) as connected:
        yield connected


# -- resize modes ---------------------------------------------------------------------------


def gradient(width: int, height: int) -> np.ndarray:
    x = np.linspace(0, 1, width, dtype=np.float32)
    return np.repeat(np.repeat(x[None, :, None], height, axis=0), 3, axis=2)


def test_just_resize_stretches():
    out = resize.fit(gradient(200, 100), 64, 64, "resize", "seg")
    assert out.shape == (64, 64, 3)
    assert out[0, 0, 0] < 0.02 and out[0, -1, 0] > 0.98


def test_crop_and_resize_keeps_the_centre():
    out = resize.fit(gradient(200, 100), 64, 64, "crop", "seg")
    assert out.shape == (64, 64, 3)
    # The middle half of the width survives: 0.25..0.75.
    assert 0.24 < out[0, 0, 0] < 0.28 and 0.72 < out[0, -1, 0] < 0.76


@pytest.mark.parametrize(
    "kind, fill",
    [
        ("canny", (0, 0, 0)),
        ("depth", (0, 0, 0)),
        ("normal", (0.5, 0.5, 1)),
        ("seg", (0.5, 0.5, 0.5)),
    ],
)
def test_resize_and_fill_pads_with_the_right_colour(kind, fill):
    image = np.full((100, 200, 3), 0.5, dtype=np.float32)
    if kind == "depth":
        image[:] = 0.7
    if kind == "normal":
        image[:] = (0.2, 0.5, 0.9)  # the unit normal (0.6, 0, 0.8)
    out = resize.fit(image, 64, 64, "fill", kind)
    assert out.shape == (64, 64, 3)
    np.testing.assert_allclose(out[0, 0], fill)  # top border
    np.testing.assert_allclose(out[32, 32], image[0, 0], atol=1e-6)  # the picture


@pytest.mark.parametrize("kind", ["depth", "normal"])
def test_depth_and_normal_resampling_does_not_mix_in_background(kind):
    depth, normals = render(257, 257)
    full = (
        tether.maps.depth_from_linear(depth, far=100)
        if kind == "depth"
        else tether.maps.normals_from_view(normals)
    )
    background = np.array(resize.BACKGROUNDS[kind], dtype=np.float32)
    for size in (64, 400):  # shrinking (area) and growing (linear)
        out = resize.fit(full, size, size, "resize", kind)
        is_background = np.all(np.abs(out - background) < 1e-6, axis=2)
        foreground = out[~is_background]
        if kind == "depth":
            # No silhouette pixel darker than the farthest real surface.
            assert foreground[:, 0].min() >= full[full[..., 0] > 0][:, 0].min() - 1e-6
        else:
            # Every foreground normal still has unit length: no blend toward (0.5, 0.5, 1).
            vectors = foreground * 2 - 1
            np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
        assert 0.3 < is_background.mean() < 0.7


# -- Preprocess through the server -----------------------------------------------------------


def square_photo(size: int = 96) -> np.ndarray:
    image = np.full((size, size, 3), 30, dtype=np.uint8)
    image[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 220
    return image


def test_canny_finds_the_square_edges(client):
    edges = client.preprocess(tether.Control.canny(square_photo()), width=SIZE, height=SIZE)
    assert edges.shape == (SIZE, SIZE, 3) and edges.dtype == np.uint8
    assert set(np.unique(edges)) == {0, 255}
    lit = np.argwhere(edges[:, :, 0] == 255)
    # Edges sit on the square's outline (16..48 after scaling 96 -> 64), nowhere else.
    assert lit.min() >= 14 and lit.max() <= 49
    assert edges[32, 32, 0] == 0 and edges[2, 2, 0] == 0
    faint = square_photo() // 10 + 30  # a step of 19 levels
    assert client.preprocess(tether.Control.canny(faint)).max() == 0  # below 100/200
    found = client.preprocess(tether.Control.canny(faint, low=10, high=40))
    assert found.shape == (96, 96, 3) and found.max() == 255


def test_depth_buffer_converted_on_the_server_equals_maps(client):
    depth, _ = render(SIZE, SIZE)
    served = client.preprocess(tether.Control.depth(depth))
    local = tether.maps.to_uint8(tether.maps.depth_from_linear(depth))
    np.testing.assert_array_equal(served, local)


def test_hardware_depth_buffer_equals_linear(client):
    depth, _ = render(SIZE, SIZE)
    near, far = 0.5, 50.0
    with np.errstate(divide="ignore"):
        z = np.where(np.isfinite(depth), (1 / near - 1 / depth) / (1 / near - 1 / far), 1.0)
    for reversed_z in (False, True):
        buffer = (1 - z if reversed_z else z).astype(np.float32)
        served = client.preprocess(
            tether.Control.depth(buffer, near=near, far=far, reversed_z=reversed_z)
        )
        local = tether.maps.to_uint8(tether.maps.depth_from_linear(depth))
        assert np.abs(served.astype(int) - local).max() <= 1


def test_world_normals_with_camera_equal_view_normals(client):
    _, normals = render(SIZE, SIZE)
    angle = np.radians(30)
    rotation = np.array(
        [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
    )
    camera = np.eye(4)
    camera[:3, :3] = rotation
    camera[:3, 3] = (1, 2, 3)
    world = (normals.reshape(-1, 3) @ rotation.T).reshape(normals.shape).astype(np.float32)
    served = client.preprocess(tether.Control.normal(world, space="world", camera=camera))
    view = client.preprocess(tether.Control.normal(normals))
    assert np.abs(served.astype(int) - view).max() <= 1
    np.testing.assert_array_equal(view[0, 0], (128, 128, 255))  # background (sky)


def test_bottom_up_buffers_are_flipped(client):
    depth, _ = render(SIZE, SIZE)
    upright = client.preprocess(tether.Control.depth(depth))
    flipped = client.preprocess(tether.Control.depth(depth[::-1].copy(), bottom_up=True))
    np.testing.assert_array_equal(upright, flipped)


def test_invert_and_fill(client):
    art = np.full((32, 64), 255, dtype=np.uint8)
    art[:, 30:34] = 0  # a black stroke on white
    control = tether.Control("canny", art, preprocessor=tether.Invert(), resize="fill")
    lines = client.preprocess(control, width=SIZE, height=SIZE)
    assert lines.shape == (SIZE, SIZE, 3)
    assert lines[0, 0, 0] == 0  # black fill above the 2:1 picture
    assert lines[32, 32, 0] == 255 and lines[32, 5, 0] == 0  # the stroke, now white


def test_preprocess_bad_input(client):
    with pytest.raises(tether.InvalidArgument, match="width: set width and height together"):
        client.preprocess(tether.Control.canny(square_photo()), width=64)
    with pytest.raises(tether.NotFound, match="control.model: no control model 'pose'"):
        client.preprocess(tether.Control("pose", square_photo()))
    assert client.preprocess(tether.Control.canny(square_photo())).shape == (96, 96, 3)


def test_controls_of_another_size_are_fitted_in_generate(client):
    depth, normals = render(128, 96)
    result = client.generate(
        "x",
        steps=2,
        width=SIZE,
        height=SIZE,
        controls=[tether.Control.depth(depth, weight=0.7), tether.Control.normal(normals)],
    )
    assert result.image.shape == (SIZE, SIZE, 3)


# -- inpainting -------------------------------------------------------------------------------


@pytest.mark.parametrize("blur", [0, 4])
def test_inpaint_leaves_pixels_outside_the_mask_unchanged(client, blur):
    rng = np.random.default_rng(1)
    init = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    mask[16:40, 20:50] = 255
    result = client.generate(
        "a red door",
        steps=4,
        seed=3,
        width=SIZE,
        height=SIZE,
        init_image=init,
        strength=1.0,
        mask=mask,
        mask_blur=blur,
        controls=[tether.Control.canny(init)],
    )
    far_outside = np.ones((SIZE, SIZE), dtype=bool)
    far_outside[16 - 3 * blur : 40 + 3 * blur, 20 - 3 * blur : 50 + 3 * blur] = False
    np.testing.assert_array_equal(result.image[far_outside], init[far_outside])
    inside = result.image[20:36, 24:46].astype(int) - init[20:36, 24:46]
    assert np.abs(inside).mean() > 20  # repainted
