"""The Tether docker: server, base model and LoRAs, prompt and repaint parameters, the
running job, and Live mode (on/off, Apply, its steps)."""

from __future__ import annotations

from typing import Any

import tether
from krita import DockWidget
from PyQt5.QtCore import QTimer
from PyQt5.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from tether import background

from . import plugin
from .controller import default_client
from .messages import describe
from .settings import LIVE_STEPS, LORA_WEIGHTS, RANDOM_SEED, Settings

DEFAULT_MODEL_LABEL = "(server default)"
NO_LORA_LABEL = "(none)"
LORA_SLOTS = 3  # LoRAs per repaint the docker offers (the server takes up to 8)
TILING_CHOICES = (("none", ""), ("x (left/right)", "x"), ("y (top/bottom)", "y"), ("x and y", "xy"))
MAX_SEED = 2**31 - 1  # QSpinBox holds a C int


class TetherDocker(DockWidget):
    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle("Tether")
        self._models_job: background.Job | None = None
        self._running = False  # a repaint is running
        self._live = False  # Live is on
        self._models_timer = QTimer(self)
        self._models_timer.setInterval(plugin.POLL_INTERVAL_MS)
        self._models_timer.timeout.connect(self._poll_models)
        self._build()
        self._load(plugin.load_settings())
        self._connect_storage()
        plugin.instance().add_display(self)

    # --- layout -------------------------------------------------------------------------
    def _build(self) -> None:
        root = QWidget(self)
        column = QVBoxLayout(root)
        form = QFormLayout()
        column.addLayout(form)

        self.address = QLineEdit()
        self.token = QLineEdit()
        self.token.setEchoMode(QLineEdit.Password)
        self.token.setPlaceholderText("none")
        self.model = QComboBox()
        self.refresh = QPushButton("Refresh")
        self.refresh.setToolTip("Ask the server for its models")
        self.refresh.clicked.connect(self.refresh_models)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model, 1)
        model_row.addWidget(self.refresh)
        form.addRow("Server", self.address)
        form.addRow("Token", self.token)
        form.addRow("Model", model_row)
        self.loras: list[tuple[QComboBox, QDoubleSpinBox]] = []
        for slot in range(LORA_SLOTS):
            name = QComboBox()
            name.setToolTip("A LoRA of the server's, applied to every repaint and live frame")
            weight = _double_box(*LORA_WEIGHTS, 0.05, "How strongly the LoRA applies")
            row = QHBoxLayout()
            row.addWidget(name, 1)
            row.addWidget(weight)
            form.addRow("LoRA" if slot == 0 else "", row)
            self.loras.append((name, weight))

        self.prompt = QPlainTextEdit()
        self.prompt.setPlaceholderText("What to paint in the selection")
        self.prompt.setMaximumHeight(80)
        self.negative_prompt = QPlainTextEdit()
        self.negative_prompt.setPlaceholderText("What to avoid")
        self.negative_prompt.setMaximumHeight(50)
        form.addRow("Prompt", self.prompt)
        form.addRow("Negative", self.negative_prompt)

        self.strength = _double_box(0.05, 1.0, 0.05, "How much of the selection is repainted")
        self.edge_weight = _double_box(0.0, 2.0, 0.05, "How closely the edges are followed")
        self.edge_low = _int_box(0, 255, "Canny low threshold")
        self.edge_high = _int_box(0, 255, "Canny high threshold")
        thresholds = QHBoxLayout()
        thresholds.addWidget(self.edge_low)
        thresholds.addWidget(self.edge_high)
        self.steps = _int_box(1, 150, "Denoising steps")
        self.seed = _int_box(RANDOM_SEED, MAX_SEED, "Seed of the noise; 'random' draws one")
        self.seed.setSpecialValueText("random")
        self.context = _int_box(0, 200, "Context around the selection, % of its longer side")
        self.context.setSuffix(" %")
        self.tiling = QComboBox()
        for label, value in TILING_CHOICES:
            self.tiling.addItem(label, value)
        self.tiling.setToolTip(
            "Seamless texture: the result wraps around these edges of the canvas. "
            "Reads the whole canvas; a selection still limits what changes."
        )
        self.show_edges = QCheckBox("Show edges as a layer")
        form.addRow("Strength", self.strength)
        form.addRow("Edge weight", self.edge_weight)
        form.addRow("Edge thresholds", thresholds)
        form.addRow("Steps", self.steps)
        form.addRow("Seed", self.seed)
        form.addRow("Context", self.context)
        form.addRow("Tiling", self.tiling)
        form.addRow("", self.show_edges)
        self.live_steps = _int_box(*LIVE_STEPS, "Denoising steps of each live frame")
        form.addRow("Live steps", self.live_steps)

        buttons = QHBoxLayout()
        self.repaint_button = QPushButton("Repaint selection")
        self.repaint_button.clicked.connect(self.repaint)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(lambda: plugin.instance().cancel())
        buttons.addWidget(self.repaint_button, 1)
        buttons.addWidget(self.cancel_button)
        column.addLayout(buttons)
        live_buttons = QHBoxLayout()
        self.live_button = QPushButton("Live")
        self.live_button.setCheckable(True)
        self.live_button.setToolTip("Repaint the selection (or the image) as you paint")
        self.live_button.toggled.connect(self._live_toggled)
        self.apply_button = QPushButton("Apply")
        self.apply_button.setToolTip("Copy the live result onto a new layer")
        self.apply_button.clicked.connect(lambda: plugin.instance().apply_live())
        live_buttons.addWidget(self.live_button, 1)
        live_buttons.addWidget(self.apply_button)
        column.addLayout(live_buttons)
        self.progress = QProgressBar()
        self.progress.setTextVisible(False)
        column.addWidget(self.progress)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        column.addWidget(self.status)
        column.addStretch(1)
        self.setWidget(root)

    # --- settings -----------------------------------------------------------------------
    def settings(self) -> Settings:
        model = self.model.currentText()
        return Settings(
            address=self.address.text().strip(),
            token=self.token.text().strip(),
            model="" if model == DEFAULT_MODEL_LABEL else model,
            prompt=self.prompt.toPlainText(),
            negative_prompt=self.negative_prompt.toPlainText(),
            strength=self.strength.value(),
            edge_weight=self.edge_weight.value(),
            edge_low=self.edge_low.value(),
            edge_high=self.edge_high.value(),
            steps=self.steps.value(),
            seed=self.seed.value(),
            show_edges=self.show_edges.isChecked(),
            context_percent=self.context.value(),
            live_steps=self.live_steps.value(),
            loras=tuple(
                tether.Lora(name.currentText(), weight.value())
                for name, weight in self.loras
                if name.currentIndex() > 0
            ),
            tiling=self.tiling.currentData(),
        )

    def _load(self, settings: Settings) -> None:
        self.address.setText(settings.address)
        self.token.setText(settings.token)
        self._set_models([settings.model] if settings.model else [], settings.model)
        chosen = [lora.name for lora in settings.loras]
        for slot, (name, weight) in enumerate(self.loras):
            lora = settings.loras[slot] if slot < len(settings.loras) else None
            _set_choices(name, NO_LORA_LABEL, chosen, lora.name if lora else "")
            weight.setValue(lora.weight if lora else 1.0)
        self.tiling.setCurrentIndex(max(self.tiling.findData(settings.tiling), 0))
        self.prompt.setPlainText(settings.prompt)
        self.negative_prompt.setPlainText(settings.negative_prompt)
        self.strength.setValue(settings.strength)
        self.edge_weight.setValue(settings.edge_weight)
        self.edge_low.setValue(settings.edge_low)
        self.edge_high.setValue(settings.edge_high)
        self.steps.setValue(settings.steps)
        self.seed.setValue(max(RANDOM_SEED, min(settings.seed, MAX_SEED)))
        self.show_edges.setChecked(settings.show_edges)
        self.context.setValue(settings.context_percent)
        self.live_steps.setValue(max(LIVE_STEPS[0], min(settings.live_steps, LIVE_STEPS[1])))

    def _connect_storage(self) -> None:
        store = self._store
        for line in (self.address, self.token):
            line.editingFinished.connect(store)
        for text in (self.prompt, self.negative_prompt):
            text.textChanged.connect(store)
        for box in (self.strength, self.edge_weight, self.edge_low, self.edge_high):
            box.valueChanged.connect(store)
        for box in (self.steps, self.seed, self.context, self.live_steps):
            box.valueChanged.connect(store)
        self.show_edges.toggled.connect(store)
        for combo in (self.model, self.tiling, *(name for name, _ in self.loras)):
            combo.currentIndexChanged.connect(store)
        for _, weight in self.loras:
            weight.valueChanged.connect(store)

    def _store(self, *_: Any) -> None:
        settings = self.settings()
        plugin.store_settings(settings)
        plugin.instance().configure_live(settings)

    # --- models -------------------------------------------------------------------------
    def refresh_models(self) -> None:
        if self._models_job is not None and not self._models_job.done:
            return
        settings = self.settings()
        self.show_status(f"Asking {settings.address} for its models…")
        self.refresh.setEnabled(False)

        def fetch(task: background.Task) -> Any:
            client = default_client(settings)
            try:
                return client.models(timeout=10.0)
            finally:
                client.close()

        self._models_job = background.Job(
            fetch, describe=lambda error: describe(error, settings.address), name="tether-models"
        )
        self._models_job.start()
        self._models_timer.start()

    def _poll_models(self) -> None:
        for event in self._models_job.poll():
            if isinstance(event, background.Done):
                self._models_arrived(event.value, self.settings())
            elif isinstance(event, background.Failed):
                self.show_status(event.message)
        if self._models_job.done:
            self._models_timer.stop()
            self.refresh.setEnabled(True)

    def _models_arrived(self, models: Any, current: Settings) -> None:
        """Offer the server's models and LoRAs; a choice the server lacks falls back to
        the default model or to no LoRA, and the status line names it."""
        names = [model.name for model in models.models]
        self._set_models(names, current.model)
        lora_names = [lora.name for lora in models.loras]
        for slot, (name, _) in enumerate(self.loras):
            chosen = current.loras[slot].name if slot < len(current.loras) else ""
            _set_choices(name, NO_LORA_LABEL, lora_names, chosen)
        missing = [lora.name for lora in current.loras if lora.name not in lora_names]
        if current.model and current.model not in names:
            missing.insert(0, current.model)
        notes = [f"The server offers {len(names)} model(s) and {len(lora_names)} LoRA(s)."]
        if missing:
            notes.append(f"It lacks {', '.join(missing)}: pick again.")
        if not any(c.kind == "canny" for c in models.controls):
            notes.append("It has no canny control model: Repaint and Live need one.")
        self.show_status(" ".join(notes))
        self._store()

    def _set_models(self, names: list[str], current: str) -> None:
        _set_choices(self.model, DEFAULT_MODEL_LABEL, names, current)

    # --- job ----------------------------------------------------------------------------
    def repaint(self) -> None:
        settings = self.settings()
        plugin.store_settings(settings)
        plugin.instance().repaint(settings=settings)

    def show_status(self, text: str) -> None:
        self.status.setText(text)

    def show_progress(self, step: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(step)

    def _live_toggled(self, on: bool) -> None:
        if on:
            settings = self.settings()
            plugin.store_settings(settings)
            if not plugin.instance().start_live(settings=settings):
                self.set_live(False)
        else:
            plugin.instance().stop_live()

    def set_live(self, on: bool) -> None:
        self._live = on
        self.live_button.blockSignals(True)  # shows the state; does not change it
        self.live_button.setChecked(on)
        self.live_button.blockSignals(False)
        self._enable_buttons()

    def set_running(self, running: bool) -> None:
        self._running = running
        self._enable_buttons()
        if running:
            self.progress.setRange(0, 0)  # busy until the first step arrives
        else:
            self.progress.setRange(0, 1)
            self.progress.setValue(0)

    def _enable_buttons(self) -> None:
        # A repaint and Live exclude each other.
        self.repaint_button.setEnabled(not self._running and not self._live)
        self.cancel_button.setEnabled(self._running)
        self.live_button.setEnabled(not self._running)
        self.apply_button.setEnabled(self._live)

    def canvasChanged(self, canvas: Any) -> None:  # noqa: N802 - Krita's virtual
        """Required by DockWidget; the docker works on whichever document is active."""


def _set_choices(combo: QComboBox, first: str, names: list[str], current: str) -> None:
    """Fill `combo` with `first` (nothing chosen) and `names`, and select `current` (or
    `first` when it is not among them), without emitting changes."""
    combo.blockSignals(True)
    combo.clear()
    combo.addItem(first)
    combo.addItems(names)
    combo.setCurrentIndex(max(combo.findText(current), 0) if current else 0)
    combo.blockSignals(False)


def _double_box(low: float, high: float, step: float, tip: str) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setRange(low, high)
    box.setSingleStep(step)
    box.setDecimals(2)
    box.setToolTip(tip)
    return box


def _int_box(low: int, high: int, tip: str) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setToolTip(tip)
    return box
