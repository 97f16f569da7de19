"""The LoRA and embedding files a server knows, by the names clients use.

Plain data: the loading code fills a Catalog from the models file's `[loras.NAME]` and
`[embeddings.NAME]` tables and the models folder; the engine reads the files on first use
(`lora.Loras`, `embeddings.Embeddings`). Clients name files, never send paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class LoraFile:
    """A LoRA: a .safetensors file in kohya/A1111 or diffusers format."""

    name: str
    path: Path


@dataclass
class EmbeddingFile:
    """A textual-inversion embedding: a .safetensors file (A1111 or diffusers format)."""

    name: str
    path: Path


@dataclass
class Catalog:
    loras: dict[str, LoraFile] = field(default_factory=dict)
    embeddings: dict[str, EmbeddingFile] = field(default_factory=dict)
