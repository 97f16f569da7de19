"""Reading from and writing to a Krita document: the only module that calls Krita's
document API, always on the GUI thread.

It needs only these calls, which the tests' fakes mirror: Document.width/height,
colorModel/colorDepth/colorProfile, selection, pixelData, createNode, rootNode,
refreshProjection, waitForDone; Node.setPixelData/setName/setBlendingMode/remove/
addChildNode; Selection.x/y/width/height/pixelData.

Undo: Krita records adding a node (`addChildNode`) as one undo step but not writing
pixels (`setPixelData`). The result layer is therefore added once, and previews and the
final image are written into it: the whole repaint undoes in one step.
"""

from __future__ import annotations

from typing import Any

from tether.background import UserError

from .geometry import Rect, context_region
from .job import Snapshot
from .pixels import pixel_format


def take_snapshot(document: Any, context_percent: int) -> Snapshot:
    """Read what a repaint needs: the selection's bounding box plus context (the whole
    canvas without a selection) from the visible image, and the selection over it.
    Raises UserError for no document, an empty selection or an unsupported colour space."""
    if document is None:
        raise UserError("Open an image first: Repaint works on the active document.")
    fmt = pixel_format(document.colorModel(), document.colorDepth(), document.colorProfile())
    canvas = Rect(0, 0, document.width(), document.height())
    selection = document.selection()
    if selection is None:
        region, selected = canvas, None
    else:
        bounds = Rect(selection.x(), selection.y(), selection.width(), selection.height())
        bounds = bounds.intersect(canvas)
        if bounds.is_empty:
            raise UserError(_EMPTY_SELECTION)
        region = context_region(bounds, canvas, context_percent / 100)
        selected = bytes(selection.pixelData(region.x, region.y, region.width, region.height))
        if not selected.strip(b"\x00"):
            raise UserError(_EMPTY_SELECTION)
    # Strokes still in flight would be missing from the projection.
    document.waitForDone()
    data = bytes(document.pixelData(region.x, region.y, region.width, region.height))
    return Snapshot(region, data, selected, fmt)


_EMPTY_SELECTION = (
    "The selection is empty. Select the area to repaint, or deselect everything "
    "(Select > Deselect) to repaint the whole image."
)


def add_layer(
    document: Any, name: str, region: Rect, pixels: bytes, blending: str | None = None
) -> Any:
    """A new paint layer holding `pixels` over `region`, at the top of the layer stack
    (the repaint read the whole visible image, so its result belongs above everything).
    One undo step."""
    node = document.createNode(name, "paintlayer")
    # Pixels go in before the node is added, so the undoable add carries them.
    node.setPixelData(pixels, region.x, region.y, region.width, region.height)
    if blending is not None:
        node.setBlendingMode(blending)
    document.rootNode().addChildNode(node, None)
    document.refreshProjection()
    return node


class ResultLayer:
    """The layer that shows the previews and then holds the result.

    It is added on its first pixels, so a job that fails before any preview leaves the
    document untouched, and it is only ever written to afterwards, so the repaint is a
    single undo step.
    """

    def __init__(self, document: Any, region: Rect, name: str) -> None:
        self._document = document
        self._region = region
        self._name = name
        self._node: Any = None

    @property
    def added(self) -> bool:
        return self._node is not None

    def show(self, pixels: bytes) -> None:
        """Write a preview."""
        self._write(pixels, f"{self._name} (painting…)")

    def finish(self, pixels: bytes) -> Any:
        """Write the final image and give the layer its name; returns the node."""
        self._write(pixels, self._name)
        return self._node

    def discard(self) -> None:
        """Remove the layer if it was added (cancel or failure after previews)."""
        if self._node is not None:
            self._node.remove()
            self._node = None
            self._document.refreshProjection()

    def _write(self, pixels: bytes, name: str) -> None:
        region = self._region
        if self._node is None:
            self._node = add_layer(self._document, name, region, pixels)
            return
        self._node.setPixelData(pixels, region.x, region.y, region.width, region.height)
        self._node.setName(name)
        self._document.refreshProjection()


def document_is_open(document: Any) -> bool:
    """Whether `document` is still open in Krita (the user may close it mid-job)."""
    from krita import Krita

    return any(open_document == document for open_document in Krita.instance().documents())
