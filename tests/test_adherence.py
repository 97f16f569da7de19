"""The trained small model (`make weights`, build/weights/tiny) follows its control
units, on held-out scenes (seeds from `scenes.HELD_OUT_SEED` up, never drawn in training).
Those two tests are slow, and skipped until `make weights` has written the model:

    .venv/bin/python -m pytest -q -m slow tests/test_adherence.py -s   # prints the figures

Silhouettes, with a depth unit. For each scene S, take its largest visible shape k and
S' = S.without(k). Generate A from S's caption with S's depth map and B from S''s
caption with S''s depth map, same seed, steps and scheduler. The generated silhouette is
where A and B differ by more than 0.15 (colours in 0..1) in any channel
(`adherence.changed`); the depth map's silhouette is where shape k is seen in S
(`S.ids == k + 1`; the scenes are chosen so that the two depth maps differ only
there). Their IoU, averaged
over the scenes, must be >= 0.7. Without the unit — same captions, seeds and steps, no
map — the model still draws the shape the caption names, but not where the map has it,
and the changed caption redraws more than the shape: the same measure must stay <= 0.3.

Edges, with a canny unit: OpenCV's canny edges of A (generated with S's canny map)
against S's canny map, F-score with a tolerance of 2 pixels (`adherence.edge_fscore`),
averaged over the scenes: >= 0.5 with the unit, and lower than without it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import ROOT
from tether_server import catalog, scenes
from tether_server.engine import ControlInput, Engine, Job
from tether_server.registry import ModelRegistry
from tether_server.train import adherence

TRAINED = ROOT / "build" / "weights" / "tiny" / "models.toml"  # what `make weights` writes

COUNT = 6  # scenes
STEPS = 12
SEED = 11
GUIDANCE = 7.5


@pytest.fixture(scope="module")
def engine() -> Engine:
    if not TRAINED.exists():
        pytest.skip(f"no trained model at {TRAINED}: run `make weights` first")
    listed = catalog.read(TRAINED)
    registry = ModelRegistry(listed, device="cpu", dtype=torch.float32)
    registry.load("", controls=["depth", "canny"])
    return Engine(registry)


@pytest.fixture(scope="module")
def held_out() -> list[tuple[scenes.Scene, scenes.Scene, np.ndarray]]:
    """(S, S without its largest shape, that shape's silhouette) for the first held-out
    scenes whose largest shape covers at least 1% of the image and whose two depth maps
    differ only on the silhouette (removing the nearest or farthest surface would
    renormalise the whole map)."""
    chosen = []
    seed = scenes.HELD_OUT_SEED
    while len(chosen) < COUNT:
        scene = scenes.render(scenes.describe(seed))
        seed += 1
        sizes = [(scene.ids == k + 1).sum() for k in range(len(scene.spec.shapes))]
        if not sizes or max(sizes) < 0.01 * scene.ids.size:
            continue
        k = int(np.argmax(sizes))
        without, silhouette = scenes.render(scene.spec.without(k)), scene.ids == k + 1
        outside = ~silhouette
        if np.array_equal(scene.control("depth")[outside], without.control("depth")[outside]):
            chosen.append((scene, without, silhouette))
    return chosen


def generate(engine: Engine, pairs: list[tuple[str, list[ControlInput]]]) -> list[np.ndarray]:
    jobs = [
        Job(
            prompt=caption,
            seed=SEED,
            steps=STEPS,
            guidance_scale=GUIDANCE,
            width=128,
            height=128,
            controls=units,
        )
        for caption, units in pairs
    ]
    return [output.image for output in engine.run(jobs)]


def silhouette_iou(engine: Engine, held_out, unit: bool) -> float:
    def units(scene: scenes.Scene) -> list[ControlInput]:
        return [ControlInput("depth", scene.control("depth"))] if unit else []

    scores = []
    for scene, without, silhouette in held_out:
        a, b = generate(engine, [(scene.caption, units(scene)), (without.caption, units(without))])
        scores.append(adherence.iou(adherence.changed(a, b), silhouette))
    return float(np.mean(scores))


@pytest.mark.slow
def test_depth_unit_puts_the_shape_where_the_map_has_it(engine, held_out):
    with_unit = silhouette_iou(engine, held_out, unit=True)
    without_unit = silhouette_iou(engine, held_out, unit=False)
    print(f"silhouette IoU: {with_unit:.3f} with the depth unit, {without_unit:.3f} without")
    assert with_unit >= 0.7
    assert without_unit <= 0.3


@pytest.mark.slow
def test_canny_unit_draws_the_control_edges(engine, held_out):
    scenes_ = [scene for scene, _, _ in held_out]
    maps = [scene.control("canny") for scene in scenes_]
    with_unit = generate(
        engine, [(s.caption, [ControlInput("canny", m)]) for s, m in zip(scenes_, maps)]
    )
    without_unit = generate(engine, [(s.caption, []) for s in scenes_])

    def fscore(images: list[np.ndarray]) -> float:
        return float(
            np.mean(
                [
                    adherence.edge_fscore(adherence.edges(i), m[..., 0] > 0.5)
                    for i, m in zip(images, maps)
                ]
            )
        )

    followed, ignored = fscore(with_unit), fscore(without_unit)
    print(f"edge F-score: {followed:.3f} with the canny unit, {ignored:.3f} without")
    assert followed >= 0.5
    assert ignored < followed - 0.2


def test_the_measures():
    square = np.zeros((32, 32), bool)
    square[8:24, 8:24] = True
    shifted = np.roll(square, 4, axis=1)
    assert adherence.iou(square, square) == 1.0
    assert adherence.iou(square, shifted) == (16 * 12) / (16 * 20)
    image = np.zeros((32, 32, 3))
    image[square] = 0.5
    assert np.array_equal(adherence.changed(image, np.zeros_like(image)), square)
    assert not adherence.changed(image, image + 0.1).any()
    found = adherence.edges(image)
    assert adherence.edge_fscore(found, found) == 1.0
    # Within the tolerance of two pixels an edge still matches; eight pixels away it does not.
    assert adherence.edge_fscore(np.roll(found, 2, axis=0), found) == 1.0
    assert adherence.edge_fscore(np.roll(found, 8, axis=(0, 1)), found) < 0.3
