"""Synthetic scenes in numpy: coloured spheres, boxes and cylinders on a floor, lit by one
directional light and seen by a pinhole camera.

`describe(seed)` draws a scene (always the same one for the same seed); `render(spec,
size)` ray-casts it into what a renderer's buffers and a control unit hold, in the
conventions of docs/conventions.md: the colour image (sRGB 8-bit), linear view depth and
view-space normals (+X right, +Y up, +Z toward the viewer; inf and zero vectors where no
geometry is hit), an object-id buffer, and a caption such as "a red sphere and a blue box
on a grey floor" (objects named left to right). `Scene.control(kind)` gives the depth,
normal or canny map a unit takes.

The embedded model is trained on these scenes (`tether train`); the tests hold its
control units to them on seeds training never used (`HELD_OUT_SEED` and up).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np
from tether import maps

from .jobs import CANNY_THRESHOLDS

# Training draws scenes from seeds below this; tests and the demo use seeds from here up.
HELD_OUT_SEED = 1_000_000

# Albedos (linear RGB) by the name captions use.
OBJECT_COLOURS = {
    "red": (0.70, 0.05, 0.04),
    "orange": (0.85, 0.30, 0.04),
    "yellow": (0.80, 0.65, 0.05),
    "green": (0.08, 0.50, 0.10),
    "blue": (0.05, 0.12, 0.70),
    "purple": (0.35, 0.06, 0.55),
    "white": (0.85, 0.85, 0.85),
    "black": (0.03, 0.03, 0.03),
}
FLOOR_COLOURS = {
    "grey": (0.25, 0.25, 0.25),
    "brown": (0.30, 0.15, 0.06),
    "white": (0.75, 0.75, 0.72),
    "green": (0.12, 0.30, 0.10),
}
SHAPES = ("sphere", "box", "cylinder")
CAPTION_WORDS = ("a", "an", "and", "on", "floor", *OBJECT_COLOURS, *FLOOR_COLOURS, *SHAPES)

SKY_TOP = np.array([0.30, 0.45, 0.75])  # linear RGB at the top of the image
SKY_HORIZON = np.array([0.75, 0.80, 0.85])
AMBIENT = 0.3
FOV_DEGREES = 45.0
FLOOR_HALF_WIDTH = 8.0  # the floor is a rectangle |x| <= 8, -18 <= z <= 1
FLOOR_FAR = 18.0


@dataclass(frozen=True)
class Shape:
    """A primitive standing on the floor (y = 0) at (x, z), turned by `angle` about +Y.
    `size` is (radius,) for a sphere, (half width, height, half depth) for a box and
    (radius, height) for a cylinder."""

    kind: str
    colour: str
    x: float
    z: float
    size: tuple[float, ...]
    angle: float = 0.0

    @property
    def screen_x(self) -> float:
        """Where the shape is seen, left to right: x over the distance along -Z."""
        return self.x / -self.z

    def hides(self, other: Shape) -> bool:
        """Whether the two overlap in view by more than half the narrower one's width, so
        that the one behind could be hidden."""
        a = (self.screen_x - self.footprint / -self.z, self.screen_x + self.footprint / -self.z)
        b = (
            other.screen_x - other.footprint / -other.z,
            other.screen_x + other.footprint / -other.z,
        )
        overlap = min(a[1], b[1]) - max(a[0], b[0])
        return overlap > 0.5 * min(a[1] - a[0], b[1] - b[0])

    @property
    def footprint(self) -> float:
        """Radius of a vertical cylinder around the shape."""
        if self.kind == "box":
            return float(np.hypot(self.size[0], self.size[2]))
        return self.size[0]


@dataclass(frozen=True)
class SceneSpec:
    """Everything that decides a scene's pixels. World: +Y up, floor at y = 0; the camera
    stands at (0, height, 0) looking down -Z, pitched down by `pitch` degrees."""

    shapes: tuple[Shape, ...]
    floor: str
    light: tuple[float, float, float]  # unit vector toward the light, world space
    height: float
    pitch: float

    def without(self, index: int) -> SceneSpec:
        """The same scene with shape `index` taken away."""
        return dataclasses.replace(self, shapes=self.shapes[:index] + self.shapes[index + 1 :])

    @property
    def caption(self) -> str:
        names = [
            f"{_article(s.colour)} {s.colour} {s.kind}"
            for s in sorted(self.shapes, key=lambda s: s.screen_x)
        ]
        floor = f"{_article(self.floor)} {self.floor} floor"
        if not names:
            return floor
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        return f"{listed} on {floor}"

    def camera_to_world(self) -> np.ndarray:
        """3x3 rotation whose columns are the camera's right, up and backward axes."""
        p = np.radians(self.pitch)
        return np.array(
            [[1.0, 0.0, 0.0], [0.0, np.cos(p), np.sin(p)], [0.0, -np.sin(p), np.cos(p)]]
        )


@dataclass
class Scene:
    """One rendered scene. Row 0 is the top of every buffer."""

    spec: SceneSpec
    image: np.ndarray  # (H, W, 3) uint8 sRGB
    depth: np.ndarray  # (H, W) float32 linear view depth, inf where nothing is hit
    normals: np.ndarray  # (H, W, 3) float32 view space, (0, 0, 0) where nothing is hit
    ids: np.ndarray  # (H, W) int8: -1 nothing, 0 floor, k = spec.shapes[k - 1]

    @property
    def caption(self) -> str:
        return self.spec.caption

    def control(self, kind: str) -> np.ndarray:
        """The (H, W, 3) float32 map in [0, 1] a `kind` unit takes for this scene: depth
        and normal maps from the buffers through `tether.maps`; canny: OpenCV's edges of
        the colour image at the default thresholds, as the server's canny preprocessor
        finds them."""
        if kind == "depth":
            return maps.depth_from_linear(self.depth)
        if kind == "normal":
            return maps.normals_from_view(self.normals)
        if kind == "canny":
            grey = cv2.cvtColor(self.image, cv2.COLOR_RGB2GRAY)
            edges = cv2.Canny(grey, *CANNY_THRESHOLDS)
            return np.repeat(edges[:, :, None], 3, axis=2).astype(np.float32) / 255.0
        raise ValueError(f"kind: scenes give depth, normal or canny maps (got {kind!r})")


def describe(seed: int) -> SceneSpec:
    """The scene of `seed`: one to three shapes (sometimes none), their colours, sizes and
    places, the floor's colour, the light and the camera."""
    rng = np.random.default_rng(seed)
    height = rng.uniform(1.6, 2.6)
    pitch = rng.uniform(14.0, 26.0)
    count = rng.choice([0, 1, 2, 3], p=[0.05, 0.4, 0.35, 0.2])
    floor = str(rng.choice(list(FLOOR_COLOURS)))
    colours = [c for c in OBJECT_COLOURS if c != floor]
    shapes: list[Shape] = []
    # Placements that collide with another shape or could hide it are drawn again.
    for _ in range(20 * count):
        if len(shapes) == count:
            break
        shape = _random_shape(rng, str(rng.choice(colours)))
        if all(
            np.hypot(shape.x - s.x, shape.z - s.z) > shape.footprint + s.footprint + 0.15
            and not shape.hides(s)
            for s in shapes
        ):
            shapes.append(shape)
    azimuth, elevation = rng.uniform(0, 2 * np.pi), rng.uniform(np.radians(30), np.radians(70))
    light = (
        float(np.cos(elevation) * np.sin(azimuth)),
        float(np.sin(elevation)),
        float(np.cos(elevation) * np.cos(azimuth)),
    )
    return SceneSpec(tuple(shapes), floor, light, float(height), float(pitch))


def _random_shape(rng: np.random.Generator, colour: str) -> Shape:
    kind = str(rng.choice(SHAPES))
    distance = rng.uniform(4.0, 8.0)
    # Across the middle 70% of the view at that distance.
    x = rng.uniform(-0.7, 0.7) * distance * np.tan(np.radians(FOV_DEGREES / 2))
    if kind == "sphere":
        size = (rng.uniform(0.45, 1.0),)
    elif kind == "box":
        size = (rng.uniform(0.35, 0.8), rng.uniform(0.5, 1.6), rng.uniform(0.35, 0.8))
    else:
        size = (rng.uniform(0.3, 0.7), rng.uniform(0.6, 1.8))
    return Shape(
        kind,
        colour,
        float(x),
        float(-distance),
        tuple(map(float, size)),
        float(rng.uniform(0, np.pi)),
    )


def render(spec: SceneSpec, size: int = 128, antialias: bool = True) -> Scene:
    """Ray-cast `spec` into a `size`² scene. Depth, normals and ids take the one ray
    through each pixel's centre, so they never mix surfaces; with `antialias` the colour
    image averages four more rays on the pixels where a silhouette or a crease passes
    (smooth edges as a camera sees them, for a fraction of the cost of 4 rays everywhere)."""
    # 1. The ray through every pixel centre.
    rotation = spec.camera_to_world()
    rows, cols = np.indices((size, size))
    centre = _cast(spec, _rays(rows + 0.5, cols + 0.5, size, rotation))
    linear = _shade(spec, centre)

    # 2. Four rays per pixel next to another surface or across a crease.
    if antialias:
        edges = np.zeros((size, size), dtype=bool)
        for axis in (0, 1):
            step = [slice(None), slice(None)]
            step[axis] = slice(1, None)
            back = [slice(None), slice(None)]
            back[axis] = slice(None, -1)
            changed = (centre.ids[tuple(step)] != centre.ids[tuple(back)]) | (
                np.sum(centre.normals[tuple(step)] * centre.normals[tuple(back)], axis=-1) < 0.95
            )
            edges[tuple(step)] |= changed
            edges[tuple(back)] |= changed
        r, c = np.nonzero(edges)
        offsets = np.array([0.25, 0.75])
        dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
        sub = _cast(
            spec,
            _rays(r[:, None] + dy.ravel(), c[:, None] + dx.ravel(), size, rotation),
        )
        linear[r, c] = _shade(spec, sub).mean(axis=1)

    # 3. sRGB 8-bit colour; view depth and view-space normals.
    srgb = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    image = np.floor(np.clip(srgb, 0, 1) * 255 + 0.5).astype(np.uint8)
    hit = centre.ids >= 0
    forward = -rotation[:, 2]
    depth = np.where(hit, centre.t * (centre.rays @ forward), np.inf).astype(np.float32)
    normals = np.where(hit[..., None], centre.normals @ rotation, 0.0).astype(np.float32)
    return Scene(spec, image, depth, normals, centre.ids.astype(np.int8))


@dataclass
class _Hits:
    rays: np.ndarray  # (..., 3) world directions
    t: np.ndarray  # (...) distance along the ray, inf where nothing
    normals: np.ndarray  # (..., 3) world normals
    ids: np.ndarray  # (...) -1 nothing, 0 floor, k shape k - 1


def _rays(y: np.ndarray, x: np.ndarray, size: int, rotation: np.ndarray) -> np.ndarray:
    """World directions of the rays through image points (y, x), in pixels from the top
    left corner of a `size`² image."""
    focal = 0.5 * size / np.tan(np.radians(FOV_DEGREES) / 2)
    rays = np.stack([(x - size / 2) / focal, (size / 2 - y) / focal, -np.ones(x.shape)], axis=-1)
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    return rays @ rotation.T


def _cast(spec: SceneSpec, rays: np.ndarray) -> _Hits:
    """Nearest hit of each ray over the floor and every shape."""
    origin = np.array([0.0, spec.height, 0.0])
    t = np.full(rays.shape[:-1], np.inf)
    normals = np.zeros(rays.shape)
    ids = np.full(rays.shape[:-1], -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = np.where(rays[..., 1] < 0, -spec.height / rays[..., 1], np.inf)
    ground = origin + rays * np.where(np.isfinite(t_floor), t_floor, 0.0)[..., None]
    on_floor = (np.abs(ground[..., 0]) <= FLOOR_HALF_WIDTH) & (ground[..., 2] >= -FLOOR_FAR)
    t_floor = np.where(on_floor, t_floor, np.inf)
    _closer(t, normals, ids, t_floor, np.array([0.0, 1.0, 0.0]), 0)
    for k, shape in enumerate(spec.shapes, start=1):
        hit_t, hit_normals = _INTERSECT[shape.kind](shape, origin, rays)
        _closer(t, normals, ids, hit_t, hit_normals, k)
    return _Hits(rays, t, normals, ids)


def _closer(t, normals, ids, hit_t, hit_normals, index: int) -> None:
    nearer = hit_t < t
    t[nearer] = hit_t[nearer]
    normals[nearer] = np.broadcast_to(hit_normals, normals.shape)[nearer]
    ids[nearer] = index


def _sphere(shape: Shape, origin: np.ndarray, rays: np.ndarray):
    radius = shape.size[0]
    centre = np.array([shape.x, radius, shape.z])
    oc = origin - centre
    b = rays @ oc
    disc = b**2 - (oc @ oc - radius**2)
    t = np.where(disc > 0, -b - np.sqrt(np.maximum(disc, 0)), np.inf)
    t = np.where(t > 0, t, np.inf)
    points = origin + rays * np.where(np.isfinite(t), t, 0.0)[..., None]
    return t, (points - centre) / radius


def _to_local(shape: Shape, origin: np.ndarray, rays: np.ndarray):
    """Origin and rays in the shape's frame: its footprint centre at 0, turned back."""
    c, s = np.cos(shape.angle), np.sin(shape.angle)
    turn = np.array([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]])  # local -> world about +Y
    local_origin = (origin - np.array([shape.x, 0.0, shape.z])) @ turn
    return local_origin, rays @ turn, turn


def _box(shape: Shape, origin: np.ndarray, rays: np.ndarray):
    # Slabs: the ray is inside the box between the largest entry and smallest exit.
    half_x, height, half_z = shape.size
    o, d, turn = _to_local(shape, origin, rays)
    low = np.array([-half_x, 0.0, -half_z])
    high = np.array([half_x, height, half_z])
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (low - o) / d, (high - o) / d
    entry, leave = np.minimum(t1, t2), np.maximum(t1, t2)
    near, far = entry.max(axis=-1), leave.min(axis=-1)
    t = np.where((near <= far) & (near > 0), near, np.inf)
    axis = entry.argmax(axis=-1)
    local = np.zeros(rays.shape)
    np.put_along_axis(
        local, axis[..., None], -np.sign(np.take_along_axis(d, axis[..., None], -1)), -1
    )
    return t, local @ turn.T


def _cylinder(shape: Shape, origin: np.ndarray, rays: np.ndarray):
    radius, height = shape.size
    o, d, turn = _to_local(shape, origin, rays)
    # Side: |(o + t d).xz| = radius, with 0 <= y <= height.
    a = d[..., 0] ** 2 + d[..., 2] ** 2
    b = o[0] * d[..., 0] + o[2] * d[..., 2]
    disc = b**2 - a * (o[0] ** 2 + o[2] ** 2 - radius**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_side = np.where(disc > 0, (-b - np.sqrt(np.maximum(disc, 0))) / a, np.inf)
        y = o[1] + t_side * d[..., 1]
        t_side = np.where((t_side > 0) & (y >= 0) & (y <= height), t_side, np.inf)
        # Top cap: y = height, inside the radius (the camera is above every cylinder's
        # base, so the bottom cap is never seen).
        t_top = (height - o[1]) / d[..., 1]
    top = o + d * np.where(np.isfinite(t_top), t_top, 0.0)[..., None]
    inside = (top[..., 0] ** 2 + top[..., 2] ** 2 <= radius**2) & (t_top > 0)
    t_top = np.where(inside, t_top, np.inf)
    side = o + d * np.where(np.isfinite(t_side), t_side, 0.0)[..., None]
    side_normals = np.stack([side[..., 0], np.zeros_like(a), side[..., 2]], axis=-1) / radius
    local = np.where((t_top < t_side)[..., None], np.array([0.0, 1.0, 0.0]), side_normals)
    return np.minimum(t_side, t_top), local @ turn.T


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


_INTERSECT = {"sphere": _sphere, "box": _box, "cylinder": _cylinder}


def _shade(spec: SceneSpec, hits: _Hits) -> np.ndarray:
    """Linear RGB: albedo times (ambient + Lambert) on geometry, a sky gradient behind."""
    albedo = np.zeros(hits.ids.shape + (3,))
    albedo[hits.ids == 0] = FLOOR_COLOURS[spec.floor]
    for k, shape in enumerate(spec.shapes, start=1):
        albedo[hits.ids == k] = OBJECT_COLOURS[shape.colour]
    lambert = np.clip(hits.normals @ np.array(spec.light), 0, None)
    lit = albedo * (AMBIENT + (1 - AMBIENT) * lambert)[..., None]
    up = np.clip(hits.rays[..., 1], 0, 1)[..., None] ** 0.5
    sky = SKY_HORIZON + (SKY_TOP - SKY_HORIZON) * up
    return np.where((hits.ids >= 0)[..., None], lit, sky)
