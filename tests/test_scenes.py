"""Synthetic scenes: deterministic, captioned left to right, and their buffers in the
conventions of docs/conventions.md (checked against the scene's own geometry)."""

from __future__ import annotations

import numpy as np
import pytest
from tether_server import scenes

SEEDS = range(scenes.HELD_OUT_SEED, scenes.HELD_OUT_SEED + 12)


@pytest.fixture(scope="module")
def rendered() -> list[scenes.Scene]:
    return [scenes.render(scenes.describe(seed)) for seed in SEEDS]


def test_same_seed_same_scene():
    a, b = (scenes.render(scenes.describe(42)) for _ in range(2))
    assert a.spec == b.spec and a.caption == b.caption
    for name in ("image", "depth", "normals", "ids"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert scenes.describe(43) != a.spec


def test_captions_name_shapes_left_to_right():
    spec = scenes.SceneSpec(
        shapes=(
            scenes.Shape("box", "blue", 1.5, -6.0, (0.5, 1.0, 0.5)),
            scenes.Shape("sphere", "orange", -1.5, -6.0, (0.7,)),
            scenes.Shape("cylinder", "green", 0.0, -5.0, (0.5, 1.0)),
        ),
        floor="grey",
        light=(0.0, 1.0, 0.0),
        height=2.0,
        pitch=20.0,
    )
    assert spec.caption == "an orange sphere, a green cylinder and a blue box on a grey floor"
    assert spec.without(0).caption == "an orange sphere and a green cylinder on a grey floor"
    assert spec.without(0).without(0).without(0).caption == "a grey floor"
    # Every word a caption can use is in CAPTION_WORDS (the tokenizer's merges); CLIP's
    # tokenizer splits the commas off.
    captions = (scenes.describe(seed).caption.replace(",", "") for seed in range(300))
    words = {w for caption in captions for w in caption.split()}
    assert words <= set(scenes.CAPTION_WORDS)


def test_shapes_are_seen_where_the_scene_puts_them(rendered):
    for scene in rendered:
        seen = sorted(
            (np.nonzero(scene.ids == k + 1)[1].mean(), shape.screen_x)
            for k, shape in enumerate(scene.spec.shapes)
        )
        # Left to right on screen in the same order as their screen_x.
        assert [x for _, x in seen] == sorted(x for _, x in seen)
        for k in range(len(scene.spec.shapes)):
            assert (scene.ids == k + 1).sum() > 20, f"shape {k} of {scene.caption!r} is hidden"


def test_buffers_follow_the_conventions(rendered):
    for scene in rendered:
        hit = scene.ids >= 0
        assert np.isfinite(scene.depth[hit]).all() and np.isinf(scene.depth[~hit]).all()
        lengths = np.linalg.norm(scene.normals, axis=-1)
        np.testing.assert_allclose(lengths[hit], 1.0, atol=1e-5)
        assert (lengths[~hit] == 0).all()
        # The floor faces up: in view space, the camera's up axis pitched toward +Z.
        pitch = np.radians(scene.spec.pitch)
        floor = scene.normals[scene.ids == 0]
        np.testing.assert_allclose(floor - [0, np.cos(pitch), np.sin(pitch)], 0, atol=1e-5)
        # Linear view depth of the floor: camera height over the ray's drop, along -Z.
        rows = np.nonzero(scene.ids[:, 64] == 0)[0]
        size = scene.ids.shape[0]
        angle = np.arctan((rows + 0.5 - size / 2) / (0.5 * size / np.tan(np.radians(22.5))))
        expected = scene.spec.height / np.sin(pitch + angle) * np.cos(angle)
        np.testing.assert_allclose(scene.depth[rows, 64], expected, rtol=1e-4)


def test_control_maps(rendered):
    scene = rendered[0]
    depth, normal, canny = (scene.control(kind) for kind in ("depth", "normal", "canny"))
    for rgb in (depth, normal, canny):
        assert rgb.shape == (128, 128, 3) and rgb.dtype == np.float32
    # Depth: near is white, the background black; normals: background (0.5, 0.5, 1).
    assert depth[-1, 64, 0] == pytest.approx(1.0) and (depth[scene.ids < 0] == 0).all()
    assert (normal[scene.ids < 0] == [0.5, 0.5, 1.0]).all()
    # Canny: white lines on black, where the picture has edges.
    assert set(np.unique(canny)) == {0.0, 1.0}
    with pytest.raises(ValueError, match="kind: scenes give depth, normal or canny"):
        scene.control("seg")


def test_taking_a_shape_away_changes_only_its_pixels(rendered):
    """The adherence tests' silhouettes rest on this: the scene without a shape differs
    from the scene exactly where the shape was seen."""
    scene = next(s for s in rendered if len(s.spec.shapes) >= 2)
    without = scenes.render(scene.spec.without(0))
    where = scene.ids == 1
    changed = np.any(scene.image != without.image, axis=-1)
    assert changed[where].mean() > 0.9
    # Anti-aliased colour may change one pixel around the silhouette, never further.
    near = np.zeros_like(where)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            near |= np.roll(where, (dy, dx), axis=(0, 1))
    assert not changed[~near].any()
    assert np.array_equal(scene.depth[~where], without.depth[~where])
