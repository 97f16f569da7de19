"""Bake Texture's work on the worker thread: the views generated in turn, each one
conditioned on what the views before it painted, and baked into the targets' textures.
No bpy here: everything comes in as plain values (`BakeInputs`), and the textures go out
as events for the main thread.

For each view:

1. What it shows of the targets (`uvbake.screen`), and from that its conditioning
   (`uvbake.canvas`): pixels showing texels earlier views painted are kept, the rest is
   repainted. A view showing no unpainted target surface is skipped: it would add nothing.
2. The request: the view's own control units; after the first view that painted
   anything, also an inpainting request (init image = the earlier views' texture as this
   view sees it, mask = the rest, strength 1, the mask edge blurred by `MASK_BLUR`).
   View k (from 0) uses seed + k.
3. The picture is baked: every texel the view sees takes its colour, blended with the
   earlier views' by weight (`uvbake.visibility`), and the textures are emitted.

Between views the job stops if the user cancelled; during a view the server stops it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tether
from tether import background

from .connection import ClientConfig, open_client
from .uvbake.camera import ViewCamera
from .uvbake.canvas import Canvas, conditioning
from .uvbake.screen import surfaces_in_view
from .uvbake.texels import MeshData, texels_of
from .uvbake.visibility import observe

__all__ = [
    "MASK_BLUR",
    "BakeInputs",
    "BakeTarget",
    "BakeView",
    "ViewBaked",
    "ViewSkipped",
    "ViewStarted",
    "bake_views",
]

# The blur of the mask's edge (a Gaussian's sigma, in pixels): kept and repainted areas
# blend over a few pixels instead of meeting at a hard seam. The server's own default.
MASK_BLUR = 4


@dataclass(frozen=True)
class BakeView:
    """One view: its camera, its units and its Depth pass (planar, top row first)."""

    name: str
    camera: ViewCamera
    controls: tuple[tether.Control, ...]
    depth: np.ndarray


@dataclass(frozen=True)
class BakeTarget:
    """A mesh to texture: its object's name, the UV map baked on, its triangles."""

    name: str
    uv_map: str
    mesh: MeshData


@dataclass(frozen=True)
class BakeInputs:
    """Everything the work needs, checked and rendered on the main thread."""

    config: ClientConfig
    prompt: str
    options: dict[str, Any]  # tether.Client.stream's keyword arguments but controls
    views: tuple[BakeView, ...]
    targets: tuple[BakeTarget, ...]
    texture_size: int
    margin: int
    max_angle: float  # radians


@dataclass(frozen=True)
class ViewStarted:
    """View ``index`` (from 0) is being generated."""

    index: int


@dataclass(frozen=True)
class ViewSkipped:
    """View ``index`` shows no target surface that is still unpainted."""

    index: int


@dataclass(frozen=True)
class ViewBaked:
    """View ``index`` is painted in: its picture, and per target (by name) the texture
    ((size, size, 4) uint8), the missing mask ((size, size) uint8) and the painted share."""

    index: int
    picture: np.ndarray
    textures: dict[str, tuple[np.ndarray, np.ndarray, float]] = field(repr=False)


def bake_views(task: background.Task, inputs: BakeInputs) -> int:
    """Generate and bake every view in turn; returns how many views were generated."""
    canvases = [Canvas(texels_of(target.mesh, inputs.texture_size)) for target in inputs.targets]
    meshes = [target.mesh for target in inputs.targets]
    seed = int(inputs.options["seed"])
    generated = 0
    with open_client(inputs.config) as client:
        for index, view in enumerate(inputs.views):
            task.raise_if_cancelled()
            camera = view.camera
            surfaces = surfaces_in_view(meshes, camera, view.depth)
            condition = conditioning(canvases, surfaces, camera.width, camera.height)
            if condition.new == 0:
                task.emit(ViewSkipped(index))
                continue
            options = {**inputs.options, "controls": list(view.controls), "seed": seed + index}
            if condition.kept:
                options.update(
                    init_image=condition.init_image,
                    mask=condition.mask,
                    strength=1.0,
                    mask_blur=MASK_BLUR,
                )
            task.emit(ViewStarted(index))
            result = task.generate(client, inputs.prompt, **options)
            generated += 1
            for canvas in canvases:
                seen = observe(canvas.texels, camera, view.depth, inputs.max_angle)
                canvas.add(seen, result.image)
            textures = {
                target.name: (*canvas.finished(inputs.margin), canvas.painted_share())
                for target, canvas in zip(inputs.targets, canvases, strict=True)
            }
            task.emit(ViewBaked(index, result.image, textures))
    return generated
