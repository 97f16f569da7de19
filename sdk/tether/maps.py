"""Turn a renderer's depth and normal passes into ControlNet 1.1 control images.

Every function returns a C-contiguous float32 array of shape (H, W, 3) with values in
[0, 1] and row 0 at the top of the image, ready to send as a raw float buffer (or to
turn into 8 bits with `to_uint8`). Data passes are linear data: nothing here applies a
colour transform.

Shared rules:

- Row order: inputs are top row first unless ``bottom_up=True``, which says row 0 of the
  buffer is the bottom (GPU readback, OpenGL, Blender's ``image.pixels``); it is flipped.
  A ``background`` mask is a bool (H, W) array in the same row order as the buffer it
  goes with; True marks pixels with no geometry.
- Non-finite values (NaN, ±inf) never raise and never reach the output: they mean
  "no geometry" in every function, like the ``background`` mask does.
- Inputs must be floating point (float16, float32 or float64); anything else raises
  ValueError naming the argument, as do wrong shapes and bad parameters.

Depth (``control_v11f1p_sd15_depth``): near = white, far = black, normalised per image as
relative inverse depth (disparity, as MiDaS gives): 1/z over the foreground is rescaled
so its min..max becomes 0..1 (a foreground at a single depth becomes all 1); the
background is 0. Grey is repeated into the three channels.

Normals (``control_v11p_sd15_normalbae``, ScanNet's protocol: red = left, green = up,
blue = toward the camera): from view-space unit normals with +X right, +Y up, +Z toward
the viewer (OpenGL, Blender, Godot), R = (1 - nx)/2, G = (1 + ny)/2, B = (1 + nz)/2.
The background is (0.5, 0.5, 1), the colour of a normal facing the camera.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "depth_from_buffer",
    "depth_from_linear",
    "depth_from_positions",
    "normals_from_view",
    "normals_from_world",
    "to_uint8",
]

_NORMAL_BACKGROUND = np.array([0.5, 0.5, 1.0], dtype=np.float32)
# Shorter vectors carry no usable direction; renderers write (0, 0, 0) where nothing is hit.
_MIN_NORMAL_LENGTH = 1e-6


def depth_from_linear(
    depth: ArrayLike,
    *,
    background: ArrayLike | None = None,
    far: float | None = None,
    bottom_up: bool = False,
) -> np.ndarray:
    """Depth map from linear view depth (distances along the view axis, positive).

    ``depth`` is (H, W) or (H, W, 1), float16/32/64. Background is any pixel that is
    non-finite, <= 0, True in ``background``, or >= ``far`` when ``far`` is given. Use
    ``far`` when the renderer writes a huge finite value where nothing is hit (such as
    the 1e10 of Blender's Z pass): left in, it would count as the farthest surface and squash the
    real geometry's contrast. The result is 1/z rescaled so the foreground spans 0..1
    (nearest = 1), background 0, grey in three channels, top row first (``bottom_up``
    flips a bottom-first buffer).
    """
    z = _float_array("depth", depth, "a 2-D (H, W) array or (H, W, 1)", _is_scalar_shape)
    z = z.reshape(z.shape[:2]).astype(np.float64)
    bg = _mask(background, z.shape) | ~np.isfinite(z) | (z <= 0)
    if far is not None:
        if not far > 0:
            raise ValueError(f"far: must be > 0 or None (got far={far})")
        bg |= z >= far
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inverse = 1.0 / z
    return _disparity_map(inverse, bg, bottom_up)


def depth_from_buffer(
    zbuffer: ArrayLike,
    *,
    near: float,
    far: float,
    reversed_z: bool = False,
    background: ArrayLike | None = None,
    bottom_up: bool = False,
) -> np.ndarray:
    """Depth map from a perspective hardware depth buffer d in [0, 1].

    Convention: d = 0 at the near plane and 1 at the far plane, linearised as
    z = near*far / (far - d*(far - near)). That is the window depth of D3D, Vulkan, Metal,
    Godot 4 and OpenGL with glClipControl(ZERO_TO_ONE) (Godot 4.3 and later reverse it,
    see below), and also of OpenGL's default
    [-1, 1] NDC after the default glDepthRange(0, 1): its formula
    2nf / (f + n - (2d - 1)(f - n)) simplifies to the same one, so there is no switch.
    ``reversed_z=True`` is for buffers with 1 at near and 0 at far (d -> 1 - d first).

    ``zbuffer`` is (H, W) or (H, W, 1), float16/32/64. Background is the far plane or the
    clear value (d == 1, or 0 when reversed), non-finite values and ``background``.
    ``near`` and ``far`` are the camera's clip distances, 0 < near < far, both finite.
    Because 1/z is affine in d, the per-image normalisation cancels them: any valid pair
    gives the same map up to rounding, so approximate clip distances are harmless. Values
    outside [0, 1] raise ValueError (pass linear distances to `depth_from_linear`).
    Output and row order as in `depth_from_linear`.
    """
    d = _float_array("zbuffer", zbuffer, "a 2-D (H, W) array or (H, W, 1)", _is_scalar_shape)
    d = d.reshape(d.shape[:2]).astype(np.float64)
    if not np.isfinite(far):
        raise ValueError(f"far: must be finite (got far={far})")
    if not 0 < near < far:
        raise ValueError(f"near: must be > 0 and < far (got near={near}, far={far})")
    finite = np.isfinite(d)
    if finite.any() and (d[finite].min() < 0 or d[finite].max() > 1):
        raise ValueError(
            f"zbuffer: expected depth-buffer values in [0, 1], got {d[finite].min()}.."
            f"{d[finite].max()}; pass linear distances to depth_from_linear"
        )
    if reversed_z:
        d = 1.0 - d
    bg = _mask(background, d.shape) | ~finite | (d >= 1)
    # 1/z straight from d: the same linearisation, without a division that loses bits.
    inverse = 1.0 / near - d * (1.0 / near - 1.0 / far)
    return _disparity_map(inverse, bg, bottom_up)


def depth_from_positions(
    positions: ArrayLike,
    *,
    background: ArrayLike | None = None,
    bottom_up: bool = False,
) -> np.ndarray:
    """Depth map from view-space positions, camera at the origin looking down -Z.

    ``positions`` is (H, W, 3) or (H, W, 4) (the 4th channel is ignored), float16/32/64,
    in OpenGL/Blender/Godot view space. Depth is the planar z-depth -z, not the distance
    to the camera, so a flat wall facing the camera gets one depth, as a depth buffer
    would. Background is a pixel with any non-finite component, z >= 0 (at or behind the
    camera, which includes the (0, 0, 0) many renderers write where nothing is hit), or
    True in ``background``. Output and row order as in `depth_from_linear`.
    """
    p = _float_array("positions", positions, "an (H, W, 3) or (H, W, 4) array", _is_vector_shape)
    z = -p[..., 2].astype(np.float64)
    z[~np.isfinite(p[..., :3]).all(axis=-1)] = np.nan
    return depth_from_linear(z, background=background, bottom_up=bottom_up)


def normals_from_view(
    normals: ArrayLike,
    *,
    y_down: bool = False,
    legacy: bool = False,
    background: ArrayLike | None = None,
    bottom_up: bool = False,
) -> np.ndarray:
    """Normal map (normalbae layout) from view-space normals.

    ``normals`` is (H, W, 3) or (H, W, 4) (the 4th channel is ignored), float16/32/64,
    signed components (not already encoded into 0..1), +X right, +Y up, +Z toward the
    viewer. ``y_down=True`` is for Y-down (DirectX-style) buffers: ny is negated. Vectors
    are re-normalised; background is a vector with a non-finite component, one shorter
    than 1e-6 (e.g. the (0, 0, 0) renderers write where nothing is hit), or True in
    ``background``, and comes out as (0.5, 0.5, 1). ``legacy=True`` gives the layout of
    the ControlNet 1.0 normal model instead: R and B swapped, background (1, 0.5, 0.5).
    Colours are R = (1 - nx)/2, G = (1 + ny)/2, B = (1 + nz)/2; top row first
    (``bottom_up`` flips a bottom-first buffer).
    """
    n = _float_array("normals", normals, "an (H, W, 3) or (H, W, 4) array", _is_vector_shape)
    n = n[..., :3].astype(np.float32)
    if y_down:
        n[..., 1] *= -1
    return _normal_map(n, _mask(background, n.shape[:2]), legacy, bottom_up)


def normals_from_world(
    normals: ArrayLike,
    camera_to_world: ArrayLike,
    *,
    legacy: bool = False,
    background: ArrayLike | None = None,
    bottom_up: bool = False,
) -> np.ndarray:
    """Normal map (normalbae layout) from world-space normals and the camera's matrix.

    ``camera_to_world`` is the camera's 4x4 (or 3x3) world matrix in the column-vector
    convention, M @ (x, y, z, 1) maps camera-local to world, as Blender's
    ``camera.matrix_world`` and Godot's ``Camera3D.global_transform``; the camera looks
    down its local -Z with +Y up. A camera's scale does not change its render, so scale
    (and shear) are removed by Gram-Schmidt orthonormalisation of the X, Y, Z columns in
    that order (Godot's ``orthonormalized()``; for unsheared matrices also what Blender
    does), and normals are rotated into view space by the transpose of that rotation. ``normals``,
    ``background``, ``legacy``, ``bottom_up`` and the output are as in
    `normals_from_view`.
    """
    n = _float_array("normals", normals, "an (H, W, 3) or (H, W, 4) array", _is_vector_shape)
    m = np.asarray(camera_to_world, dtype=np.float64)
    if m.shape not in ((4, 4), (3, 3)) or not np.isfinite(m).all():
        raise ValueError(
            f"camera_to_world: expected a finite 4x4 (or 3x3) matrix, got shape {m.shape}"
        )
    axes: list[np.ndarray] = []
    for column in m[:3, :3].T:
        for axis in axes:
            column = column - axis * (axis @ column)
        length = np.linalg.norm(column)
        # Relative, so that a tiny but valid scale passes and parallel axes do not.
        if not length > 1e-9 * np.abs(m[:3, :3]).max():
            raise ValueError("camera_to_world: rotation part is singular (an axis has no length)")
        axes.append(column / length)
    rotation = np.stack(axes, axis=1).astype(np.float32)
    # Row vectors: n_view = R^T n_world is n_world @ R.
    view = n[..., :3].astype(np.float32) @ rotation
    return _normal_map(view, _mask(background, n.shape[:2]), legacy, bottom_up)


def to_uint8(image: ArrayLike) -> np.ndarray:
    """8-bit copy of a map: (H, W, 3) float in [0, 1] -> (H, W, 3) uint8.

    Values are clipped to [0, 1] and rounded half up, floor(x*255 + 0.5), so 0.5 -> 128.
    NaN raises ValueError (the maps never contain it).
    """
    a = _float_array("image", image, "an (H, W, 3) array", lambda s: len(s) == 3 and s[2] == 3)
    if np.isnan(a).any():
        raise ValueError("image: contains NaN; expected values in [0, 1]")
    return np.floor(np.clip(a.astype(np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)


def _disparity_map(inverse: np.ndarray, background: np.ndarray, bottom_up: bool) -> np.ndarray:
    foreground = ~background & np.isfinite(inverse)
    grey = np.zeros(inverse.shape, dtype=np.float32)
    if foreground.any():
        values = inverse[foreground]
        lo, hi = values.min(), values.max()
        grey[foreground] = (values - lo) / (hi - lo) if hi > lo else 1.0
    return _finish(np.repeat(grey[..., None], 3, axis=2), bottom_up)


def _normal_map(n: np.ndarray, background: np.ndarray, legacy: bool, bottom_up: bool) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        length = np.hypot(np.hypot(n[..., 0], n[..., 1]), n[..., 2])
    # Written as a negation so that NaN lengths, which compare False, land in background.
    background = background | ~(np.isfinite(length) & (length >= _MIN_NORMAL_LENGTH))
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        unit = n / np.where(background, 1, length)[..., None]
    rgb = np.stack([1 - unit[..., 0], 1 + unit[..., 1], 1 + unit[..., 2]], axis=-1) * 0.5
    rgb[background] = _NORMAL_BACKGROUND
    np.clip(rgb, 0, 1, out=rgb)
    if legacy:
        rgb = rgb[..., ::-1]
    return _finish(rgb, bottom_up)


def _finish(rgb: np.ndarray, bottom_up: bool) -> np.ndarray:
    return np.ascontiguousarray(rgb[::-1] if bottom_up else rgb, dtype=np.float32)


def _is_scalar_shape(shape: tuple[int, ...]) -> bool:
    return len(shape) == 2 or (len(shape) == 3 and shape[2] == 1)


def _is_vector_shape(shape: tuple[int, ...]) -> bool:
    return len(shape) == 3 and shape[2] in (3, 4)


def _float_array(
    name: str, value: ArrayLike, expected: str, shape_ok: Callable[[tuple[int, ...]], bool]
) -> np.ndarray:
    a = np.asarray(value)
    if not shape_ok(a.shape) or 0 in a.shape:
        raise ValueError(f"{name}: expected {expected}, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{name}: expected float16, float32 or float64 values, got {a.dtype}")
    return a


def _mask(background: ArrayLike | None, shape: tuple[int, ...]) -> np.ndarray:
    if background is None:
        return np.zeros(shape, dtype=bool)
    m = np.asarray(background)
    if m.dtype != bool or m.shape != shape:
        raise ValueError(
            f"background: expected a bool array of shape {shape}, got {m.dtype} of shape {m.shape}"
        )
    return m
