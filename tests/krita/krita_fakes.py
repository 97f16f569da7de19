"""Small stand-ins for Krita's document API, for the plugin's logic tests. They mirror
the calls tether_krita.document makes and keep what Krita keeps: raw pixel bytes in the
document's colour space, and an undo log of the node additions and removals that Krita
records as undo steps (pixel writes are not undoable there). The Tether side of those
tests is tests/krita/fake_tether.py."""

from __future__ import annotations

from typing import Any

import numpy as np

BYTES_PER_PIXEL = {
    ("RGBA", "U8"): 4,
    ("RGBA", "U16"): 8,
    ("RGBA", "F16"): 8,
    ("RGBA", "F32"): 16,
    ("GRAYA", "U8"): 2,
    ("GRAYA", "U16"): 4,
    ("GRAYA", "F16"): 4,
    ("GRAYA", "F32"): 8,
    ("CMYKA", "U8"): 5,
}


class FakeSelection:
    """Krita's Selection over a whole-canvas uint8 mask."""

    def __init__(self, mask: np.ndarray) -> None:
        self.mask = mask.astype(np.uint8)

    def _bounds(self) -> tuple[int, int, int, int]:
        ys, xs = np.nonzero(self.mask)
        if len(xs) == 0:
            return 0, 0, 0, 0
        return (
            int(xs.min()),
            int(ys.min()),
            int(xs.max() - xs.min() + 1),
            int(ys.max() - ys.min() + 1),
        )

    def x(self) -> int:
        return self._bounds()[0]

    def y(self) -> int:
        return self._bounds()[1]

    def width(self) -> int:
        return self._bounds()[2]

    def height(self) -> int:
        return self._bounds()[3]

    def pixelData(self, x: int, y: int, w: int, h: int) -> bytes:  # noqa: N802
        out = np.zeros((h, w), dtype=np.uint8)
        canvas_h, canvas_w = self.mask.shape
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, canvas_w), min(y + h, canvas_h)
        if x1 > x0 and y1 > y0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = self.mask[y0:y1, x0:x1]
        return out.tobytes()


class FakeNode:
    _ids = 0

    def __init__(self, document: FakeDocument, name: str, kind: str) -> None:
        FakeNode._ids += 1
        self._id = FakeNode._ids
        self._visible = True
        self.document = document
        self._name = name
        self._kind = kind
        self._parent: FakeNode | None = None
        self._children: list[FakeNode] = []
        self.blending = "normal"
        bpp = document.bytes_per_pixel
        self.data = bytearray(document.canvas_width * document.canvas_height * bpp)
        self.writes = 0
        self.history: list[bytes] = []  # what each write wrote

    def name(self) -> str:
        return self._name

    def setName(self, name: str) -> None:  # noqa: N802
        self._name = name

    def type(self) -> str:
        return self._kind

    def uniqueId(self) -> int:  # noqa: N802
        return self._id

    def visible(self) -> bool:
        return self._visible

    def setVisible(self, visible: bool) -> None:  # noqa: N802
        self._visible = visible

    def opacity(self) -> int:
        return 255

    def setBlendingMode(self, mode: str) -> None:  # noqa: N802
        self.blending = mode

    def blendingMode(self) -> str:  # noqa: N802
        return self.blending

    def parentNode(self) -> FakeNode | None:  # noqa: N802
        return self._parent

    def childNodes(self) -> list[FakeNode]:  # noqa: N802
        return list(self._children)

    def addChildNode(self, child: FakeNode, above: FakeNode | None) -> bool:  # noqa: N802
        index = len(self._children) if above is None else self._children.index(above) + 1
        self._children.insert(index, child)
        child._parent = self
        self.document.undo_log.append(("add", child.name()))
        return True

    def remove(self) -> bool:
        assert self._parent is not None, "removing a node that is not in the document"
        self._parent._children.remove(self)
        self._parent = None
        self.document.undo_log.append(("remove", self.name()))
        return True

    def setPixelData(self, data: bytes, x: int, y: int, w: int, h: int) -> bool:  # noqa: N802
        bpp = self.document.bytes_per_pixel
        assert len(data) == w * h * bpp, "wrong byte count for the rectangle"
        assert x >= 0 and y >= 0, "fake supports writes inside the canvas only"
        stride = self.document.canvas_width * bpp
        for row in range(h):
            start = (y + row) * stride + x * bpp
            self.data[start : start + w * bpp] = data[row * w * bpp : (row + 1) * w * bpp]
        self.writes += 1
        self.history.append(bytes(data))
        return True

    def pixelData(self, x: int, y: int, w: int, h: int) -> bytes:  # noqa: N802
        bpp = self.document.bytes_per_pixel
        stride = self.document.canvas_width * bpp
        rows = [
            bytes(self.data[(y + r) * stride + x * bpp : (y + r) * stride + (x + w) * bpp])
            for r in range(h)
        ]
        return b"".join(rows)


class FakeDocument:
    """A document whose projection is its bottom layer (enough for reading), with an undo
    log. `background` is the bottom layer's bytes in the document's colour space; that
    layer is the active one. `busy` stands for a stroke in progress (the image cannot be
    locked then); `reads` counts reads of the projection."""

    def __init__(
        self,
        width: int,
        height: int,
        background: bytes,
        model: str = "RGBA",
        depth: str = "U8",
        profile: str = "sRGB-elle-V2-srgbtrc.icc",
    ) -> None:
        self.canvas_width, self.canvas_height = width, height
        self.model, self.depth, self.profile = model, depth, profile
        self.bytes_per_pixel = BYTES_PER_PIXEL[(model, depth)]
        self.root = FakeNode(self, "root", "grouplayer")
        background_layer = FakeNode(self, "Background", "paintlayer")
        background_layer.setPixelData(background, 0, 0, width, height)
        self.root._children.append(background_layer)
        background_layer._parent = self.root
        self._selection: FakeSelection | None = None
        self._active: FakeNode | None = background_layer
        self.undo_log: list[tuple[str, str]] = []
        self.refreshes = 0
        self.reads = 0
        self.busy = False

    def width(self) -> int:
        return self.canvas_width

    def height(self) -> int:
        return self.canvas_height

    def colorModel(self) -> str:  # noqa: N802
        return self.model

    def colorDepth(self) -> str:  # noqa: N802
        return self.depth

    def colorProfile(self) -> str:  # noqa: N802
        return self.profile

    def selection(self) -> FakeSelection | None:
        return self._selection

    def setSelection(self, selection: FakeSelection | None) -> None:  # noqa: N802
        self._selection = selection

    def rootNode(self) -> FakeNode:  # noqa: N802
        return self.root

    def createNode(self, name: str, kind: str) -> FakeNode:  # noqa: N802
        return FakeNode(self, name, kind)

    def activeNode(self) -> FakeNode | None:  # noqa: N802
        return self._active

    def setActiveNode(self, node: FakeNode | None) -> None:  # noqa: N802
        self._active = node

    def pixelData(self, x: int, y: int, w: int, h: int) -> bytes:  # noqa: N802
        self.reads += 1
        return self.root.childNodes()[0].pixelData(x, y, w, h)

    def refreshProjection(self) -> None:  # noqa: N802
        self.refreshes += 1

    def waitForDone(self) -> None:  # noqa: N802
        pass

    def tryBarrierLock(self) -> bool:  # noqa: N802
        return not self.busy

    def unlock(self) -> None:
        pass

    def layer_names(self) -> list[str]:
        return [node.name() for node in self.root.childNodes()]


def rgba8_canvas(width: int, height: int) -> bytes:
    """A deterministic opaque BGRA pattern."""
    ys, xs = np.mgrid[0:height, 0:width]
    image = np.stack([xs % 256, ys % 256, (xs + ys) % 256, np.full_like(xs, 255)], axis=2)
    return image.astype(np.uint8).tobytes()


def rect_selection(width: int, height: int, rect: Any) -> FakeSelection:
    """A selection of `rect` (a tether_krita.geometry.Rect) on a width x height canvas."""
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[rect.y : rect.bottom, rect.x : rect.right] = 255
    return FakeSelection(mask)
