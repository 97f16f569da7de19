"""The server's models by name, loaded on first use: what the engine runs jobs on.

- Base models load when a job first needs one and stay resident up to `max_loaded`;
  loading one more first unloads the least recently used. A job of an unloaded model (one
  evicted while it waited included) loads it again when its turn comes: it waits, it does
  not fail. Loading runs on the engine thread, never on the asyncio loop; jobs queued
  behind it wait for it, in order.
- ControlNets are shared by every base model (all are SD 1.5-family); each loads on its
  first use and stays.
- `catalog` holds what can be served (names, kinds, default sizes, LoRA and embedding
  files) without loading anything.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable

import torch
from transformers import CLIPTokenizer

from .catalog import BaseEntry, Catalog, ControlEntry
from .errors import Internal, ModelConfigError, NotFound, shown
from .loading import load_base, load_control, load_text_side
from .models import ControlNet, ModelSet

log = logging.getLogger("tether.models")


class ModelRegistry:
    """Loads and keeps the catalog's models. `load` runs on the engine thread only; the
    lookups (`base`, `control`) read the catalog alone and may run on any thread."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        device: str | torch.device,
        dtype: torch.dtype,
        max_loaded: int = 1,
    ) -> None:
        self.catalog = catalog
        self.device = torch.device(device)
        self.dtype = dtype
        self.max_loaded = max_loaded
        self._loaded: OrderedDict[str, ModelSet] = OrderedDict()  # least recently used first
        self._controls: dict[str, ControlNet] = {}  # loaded ControlNets, shared by every model
        self._text_sides: dict[str, tuple[CLIPTokenizer, int]] = {}
        self._text_sides_lock = threading.Lock()

    @classmethod
    def of(cls, models: ModelSet | ModelRegistry, files: Catalog | None = None) -> ModelRegistry:
        """`models` if it is a registry, else a registry of that one model set, loaded (the
        embedded tiny model, tests), offering the LoRAs and embeddings of `files`."""
        if isinstance(models, ModelRegistry):
            return models
        files = files or Catalog()
        catalog = Catalog(
            models={
                models.name: BaseEntry(
                    models.name, None, None, None, None, models.family, models.default_size
                )
            },
            controls={
                name: ControlEntry(name, control.kind, None, None, None)
                for name, control in models.controls.items()
            },
            loras=files.loras,
            embeddings=files.embeddings,
        )
        registry = cls(catalog, device=models.device, dtype=models.dtype)
        registry._loaded[models.name] = models
        registry._controls = models.controls
        return registry

    @property
    def default(self) -> str:
        """The default model's name: the catalog's first."""
        return self.catalog.default

    def loaded(self) -> list[str]:
        """Names of the resident base models, least recently used first."""
        return list(self._loaded)

    def last_used(self) -> ModelSet | None:
        """The most recently used resident model set, if any."""
        return next(reversed(self._loaded.values()), None)

    def base(self, name: str) -> BaseEntry:
        """The base model `name` ("" = the default), or NotFound naming the field."""
        entry = self.catalog.models.get(name or self.default)
        if entry is None:
            names = ", ".join(repr(n) for n in self.catalog.models)
            raise NotFound(f"model: no model {shown(name)}; this server has {names}")
        return entry

    def control(self, name: str, where: str) -> ControlEntry:
        """The control model `name`, or NotFound naming the unit (`where`)."""
        entry = self.catalog.controls.get(name)
        if entry is None:
            raise NotFound(
                f"{where}.model: no control model {shown(name)}; this server has "
                f"{', '.join(self.catalog.controls) or 'none'}"
            )
        return entry

    def text_side(self, name: str) -> tuple[CLIPTokenizer, int]:
        """The base model `name`'s tokenizer and text encoder width: what checking a prompt
        needs. Taken from the model set if it is loaded, else read from its files without
        loading weights; kept either way. Any thread."""
        entry = self.base(name)
        with self._text_sides_lock:
            if entry.name not in self._text_sides:
                models = self._loaded.get(entry.name)
                if models is not None:
                    width = models.text_encoder.config.hidden_size
                    self._text_sides[entry.name] = (models.tokenizer, width)
                else:
                    try:
                        self._text_sides[entry.name] = load_text_side(entry)
                    except ModelConfigError as error:
                        raise Internal(f"a model failed to load: {error}") from error
            return self._text_sides[entry.name]

    def load(self, name: str, controls: Iterable[str] = ()) -> ModelSet:
        """The model set `name` ("" = the default) with the ControlNets `controls` loaded,
        loading whatever is not yet. A file that fails to load is Internal for the client,
        raised from the ModelConfigError that names the file."""
        entry = self.base(name)
        models = self._loaded.get(entry.name)
        try:
            if models is None:
                self._make_room()  # before anything new loads
            for control in controls:
                if control not in self._controls:
                    self._controls[control] = self._timed(
                        load_control, self.control(control, "controls"), self.device, self.dtype
                    )
            if models is None:
                models = self._timed(load_base, entry, self._controls, self.device, self.dtype)
                self._loaded[entry.name] = models
        except ModelConfigError as error:
            raise Internal(f"a model failed to load: {error}") from error
        self._loaded.move_to_end(entry.name)
        return models

    def _make_room(self) -> None:
        """Unload least recently used models until one more fits, their memory freed
        before the next one loads."""
        if len(self._loaded) < self.max_loaded:
            return
        while len(self._loaded) >= self.max_loaded:
            name, _ = self._loaded.popitem(last=False)
            log.info("unloaded model %s (--max-loaded %d)", name, self.max_loaded)
        gc.collect()  # modules can hold reference cycles
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    @staticmethod
    def _timed(load, entry, *args):
        started = time.perf_counter()
        loaded = load(entry, *args)
        log.info("loaded %s in %.1f s", entry.name, time.perf_counter() - started)
        return loaded
