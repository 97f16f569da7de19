"""Textual-inversion embeddings: learned token vectors, used by name in prompts.

As in A1111, an embedding's name written in a prompt as a word (its CLIP tokens in
sequence) stands for the embedding's vectors; in a negative prompt it works the same way
(the "negative embeddings" users rely on). `conditioning` puts the vectors in place of the
name's tokens.

Files are .safetensors in A1111's format (`emb_params`, or `string_to_param.*`) or
diffusers' (one tensor under its token's name), read on first use and kept. SDXL's
(`clip_l`/`clip_g`) and vectors of another width than the text encoder's are refused
naming the file.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .catalog import EmbeddingFile
from .errors import InvalidArgument, invalid

CHUNK_TOKENS = 75  # the tokens of one prompt chunk (77 less BOS and EOS)


class Embeddings:
    """The server's embeddings for one text encoder. Safe to use from several threads: a
    file read twice at once gives the same vectors."""

    def __init__(
        self, files: dict[str, EmbeddingFile], tokenize: Callable[[str], list[int]], width: int
    ) -> None:
        self.files = files
        self.width = width  # the text encoder's hidden size
        self._tokenize = tokenize
        self._vectors: dict[str, torch.Tensor] = {}
        # First token of a name -> (the name's tokens, name), longest first.
        self._by_first_token: dict[int, list[tuple[list[int], str]]] | None = None

    def at(self, tokens: list[int], position: int) -> tuple[str, int] | None:
        """(name, its token count) of the embedding written at `position`, or None."""
        if self._by_first_token is None:
            table: dict[int, list[tuple[list[int], str]]] = {}
            for name in self.files:
                ids = self._tokenize(name)
                if ids:
                    table.setdefault(ids[0], []).append((ids, name))
            for candidates in table.values():
                candidates.sort(key=lambda entry: len(entry[0]), reverse=True)
            self._by_first_token = table
        for ids, name in self._by_first_token.get(tokens[position], ()):
            if tokens[position : position + len(ids)] == ids:
                return name, len(ids)
        return None

    def vectors(self, name: str, field: str) -> torch.Tensor:
        """The embedding's vectors, (count, width) float32 on the CPU; InvalidArgument
        naming `field` if its file cannot be used."""
        vectors = self._vectors.get(name)
        if vectors is None:
            vectors = self._read(self.files[name], field)
            self._vectors[name] = vectors
        return vectors

    def _read(self, file: EmbeddingFile, field: str) -> torch.Tensor:
        def refuse(reason: str) -> InvalidArgument:
            return invalid(field, f"the embedding {file.name!r} ({file.path.name}) {reason}")

        try:
            tensors = load_file(file.path)
        except (OSError, SafetensorError) as error:
            raise refuse(f"cannot be read: {error}") from None
        if "clip_l" in tensors or "clip_g" in tensors:
            raise refuse("is an SDXL embedding; this model's text encoder is SD 1.5's")
        if "emb_params" in tensors:  # A1111
            vectors = tensors["emb_params"]
        elif "string_to_param.*" in tensors:  # A1111's older layout, flattened
            vectors = tensors["string_to_param.*"]
        elif len(tensors) == 1:  # diffusers: {token: vectors}
            vectors = next(iter(tensors.values()))
        else:
            raise refuse(f"is not a textual-inversion embedding (tensors: {', '.join(tensors)})")
        if vectors.ndim == 1:
            vectors = vectors[None]
        if vectors.ndim != 2 or vectors.shape[1] != self.width:
            raise refuse(
                f"holds vectors of shape {tuple(vectors.shape)}; this text encoder takes "
                f"{self.width}-wide vectors (an embedding for another model family?)"
            )
        if not 1 <= len(vectors) <= CHUNK_TOKENS:
            raise refuse(f"has {len(vectors)} vectors; a prompt chunk holds {CHUNK_TOKENS}")
        return vectors.float()
