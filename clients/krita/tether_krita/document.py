"""Reading from and writing to a Krita document: the only module that calls Krita's
document API, always on the GUI thread.

It needs only these calls, which the tests' fakes mirror: Document.width/height,
colorModel/colorDepth/colorProfile, selection, pixelData, createNode, rootNode,
activeNode, refreshProjection, waitForDone, tryBarrierLock/unlock; Node.setPixelData/
pixelData/setName/setBlendingMode/remove/addChildNode/childNodes/parentNode/uniqueId/
visible/setVisible/opacity/blendingMode; Selection.x/y/width/height/pixelData.

Undo: Krita records adding a node (`addChildNode`) and removing one as undo steps, but
not writing pixels (`setPixelData`) or hiding a node (`setVisible`). The result layer is
therefore added once, and previews and the final image are written into it: the whole
repaint undoes in one step. Live mode's layer is added with its first result and removed
when Live ends; Apply adds one layer.
"""

from __future__ import annotations

from typing import Any

from tether.background import UserError

from .geometry import Rect, context_region
from .job import Snapshot
from .pixels import pixel_format


def take_snapshot(document: Any, context_percent: int, whole_canvas: bool = False) -> Snapshot:
    """Read what a repaint needs: the selection's bounding box plus context (the whole
    canvas without a selection, or with `whole_canvas`: a seamless texture must be read
    edge to edge) from the visible image, and the selection over it. Raises UserError for
    no document, an empty selection or an unsupported colour space."""
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
        region = canvas if whole_canvas else context_region(bounds, canvas, context_percent / 100)
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
    document: Any,
    name: str,
    region: Rect,
    pixels: bytes,
    blending: str | None = None,
    below: Any = None,
) -> Any:
    """A new paint layer holding `pixels` over `region`, directly under the layer `below`
    (unless that is the lowest of its group), or else at the top of the layer stack (a
    repaint read the whole visible image, so its result belongs above everything). One
    undo step."""
    node = document.createNode(name, "paintlayer")
    # Pixels go in before the node is added, so the undoable add carries them.
    node.setPixelData(pixels, region.x, region.y, region.width, region.height)
    if blending is not None:
        node.setBlendingMode(blending)
    parent, above = document.rootNode(), None
    if below is not None and below.parentNode() is not None:
        # Krita places a node above a sibling: the one under `below`, if any.
        parent = below.parentNode()
        ids = [sibling.uniqueId() for sibling in parent.childNodes()]
        index = ids.index(below.uniqueId())
        above = parent.childNodes()[index - 1] if index > 0 else None
    parent.addChildNode(node, above)
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


class LiveLayer:
    """The layer that shows Live mode's newest result, on top of the layer stack.

    Added on the first result, written to afterwards (no undo step per frame). The canvas
    sent to the server is what the user sees without this layer (`read_below`).
    """

    NAME = "Tether live"

    def __init__(self, document: Any, region: Rect) -> None:
        self._document = document
        self._region = region
        self._node: Any = None
        self.pixels: bytes | None = None  # what the layer shows now

    @property
    def node(self) -> Any:
        """The layer, or None before the first result."""
        return self._node

    def show(self, pixels: bytes) -> None:
        region = self._region
        if self._node is None or self._node.parentNode() is None:
            # First result, or the user deleted the layer: (re)add it.
            self._node = add_layer(self._document, self.NAME, region, pixels)
        else:
            # Writing pixels marks them for recompositing: no refreshProjection, which
            # would recomposite the whole image for every frame.
            self._node.setPixelData(pixels, region.x, region.y, region.width, region.height)
        self.pixels = pixels

    def read_below(self) -> bytes:
        """The visible image over the region without this layer. Only while Krita is idle
        (`is_idle`): waitForDone would end a stroke in progress."""
        document, region = self._document, self._region
        hide = self._node is not None and self._node.parentNode() is not None
        hide = hide and self._node.visible()
        if hide:
            self._node.setVisible(False)
            # Hiding a node does not recomposite the image (Krita 5.1); refreshing does.
            document.refreshProjection()
        document.waitForDone()
        data = bytes(document.pixelData(region.x, region.y, region.width, region.height))
        if hide:
            self._node.setVisible(True)
            document.refreshProjection()
            # Back as it was before the canvas repaints: no flicker.
            document.waitForDone()
        return data

    def apply(self, name: str) -> Any:
        """Copy what the layer shows onto a new layer `name` right under it (so later
        results stay visible above it). One undo step."""
        assert self.pixels is not None, "nothing to apply before the first result"
        return add_layer(self._document, name, self._region, self.pixels, below=self._node)

    def remove(self) -> None:
        if self._node is not None and self._node.parentNode() is not None:
            self._node.remove()
        self._node = None
        self.pixels = None


def canvas_measure(document: Any, region: Rect, live_layer: Any) -> tuple:
    """A cheap measure of what the user may have changed, to compare between polls (Krita
    5.1's Python API has no signal for edits): each layer's id, visibility, opacity and
    blending mode, and the pixels of the active layer, the one every tool paints on, over
    `region`. The live layer is left out: its results are not the user's edits."""
    live_id = None if live_layer is None else live_layer.uniqueId()
    stack = tuple(
        (node.uniqueId(), node.visible(), node.opacity(), node.blendingMode())
        for node in _descendants(document.rootNode())
        if node.uniqueId() != live_id
    )
    active = document.activeNode()
    if active is None or active.uniqueId() == live_id:
        return stack, b""
    return stack, bytes(active.pixelData(region.x, region.y, region.width, region.height))


def is_idle(document: Any) -> bool:
    """Whether Krita is painting nothing: no stroke in progress, nothing queued. The image
    can be locked only then, so this costs nothing and never waits."""
    if not document.tryBarrierLock():
        return False
    document.unlock()
    return True


def _descendants(node: Any) -> list[Any]:
    found = []
    for child in node.childNodes():
        found.append(child)
        found.extend(_descendants(child))
    return found


def document_is_open(document: Any) -> bool:
    """Whether `document` is still open in Krita (the user may close it mid-job)."""
    from krita import Krita

    return any(open_document == document for open_document in Krita.instance().documents())
