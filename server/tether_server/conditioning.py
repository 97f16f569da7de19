"""Prompts -> the CLIP hidden states the UNet is conditioned on.

1. A plain prompt (no emphasis, no BREAK, no embedding, at most 75 tokens) is encoded as
   diffusers' `encode_prompt` encodes it: one 77-token window, padded. Parity with
   diffusers holds bit for bit.
2. Any other prompt as A1111 encodes it (`prompts.emphasis` reads its syntax):
   - each run of text is tokenized on its own, and the tokens fill chunks of 75, each
     encoded as BOS + 75 + EOS (padding after the text); when a chunk is full, the words
     after its last comma move to the next one if that comma is among its last
     COMMA_BACKTRACK tokens; BREAK starts a new chunk;
   - an embedding's name is replaced by its vectors (`embeddings`), never split across
     chunks;
   - the chunks are encoded together and their hidden states concatenated (77 x chunks
     rows), so tokens past 77 count;
   - emphasis multiplies each token's hidden state by its weight, then scales the chunk
     back to its former mean (A1111's "Original" emphasis; A1111 takes that mean over the
     whole batch of prompts, here over the prompt's own chunk).
3. Under classifier-free guidance a prompt and its negative prompt must be as long as each
   other: the shorter gets chunks of the empty prompt's encoding (A1111's "pad
   prompt/negative prompt" option; by default A1111 runs the two in separate UNet calls,
   which a batched loop cannot). Jobs of different lengths are never batched together.
Encodings are cached per prompt and text-encoder LoRA set.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import CLIPTextModel, CLIPTokenizer

from . import prompts
from .catalog import EmbeddingFile
from .embeddings import CHUNK_TOKENS, Embeddings
from .errors import invalid

MAX_PROMPT_CHARS = 4096
COMMA_BACKTRACK = 20  # A1111's default "comma padding backtrack"
WINDOW = CHUNK_TOKENS + 2  # CLIP's 77 positions


@dataclass
class _Chunk:
    """Up to 75 tokens of a prompt, with their emphasis weights."""

    ids: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    embeddings: list[tuple[int, str]] = field(default_factory=list)  # (position, name)

    def split(self, at: int) -> _Chunk:
        """Cut the chunk at `at`; return what followed, as a chunk of its own."""
        rest = _Chunk(
            self.ids[at:],
            self.weights[at:],
            [(position - at, name) for position, name in self.embeddings if position >= at],
        )
        del self.ids[at:], self.weights[at:]
        self.embeddings = [(position, name) for position, name in self.embeddings if position < at]
        return rest


@dataclass(frozen=True)
class _Parsed:
    chunks: list[_Chunk]
    plain: str | None  # the text for the plain path (1. above), or None


class PromptEncoder:
    """Encodes the prompts of one base model, from its tokenizer: `check` and `windows`
    are safe from any thread and need no weights loaded; `batch` runs on the engine's
    thread with the model's text encoder."""

    def __init__(
        self,
        tokenizer: CLIPTokenizer,
        width: int,
        embedding_files: dict[str, EmbeddingFile],
        cache_size: int = 256,
    ) -> None:
        self.tokenizer = tokenizer
        self.embeddings = Embeddings(embedding_files, self._tokens, width)
        # The tokenizer changes its own settings per call: one caller at a time.
        self._tokenizer_lock = threading.Lock()
        self._comma = tokenizer.convert_tokens_to_ids(",</w>")
        self._parsed = functools.lru_cache(maxsize=1024)(self._parse)
        # Encodings hold for the model's weights, which are the same each time it loads.
        self._cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._cache_size = cache_size

    def check(self, text: str, field: str) -> None:
        """InvalidArgument naming `field` for a prompt that cannot be encoded."""
        if len(text) > MAX_PROMPT_CHARS:
            raise invalid(field, f"at most {MAX_PROMPT_CHARS} characters (got {len(text)})")
        self._parsed(text, field)

    def windows(self, text: str, field: str) -> list[list[int]]:
        """The token ids of each 77-token window the prompt is encoded in (an embedding's
        vectors stand there as padding ids)."""
        return [list(chunk.ids) for chunk in self._parsed(text, field).chunks]

    def batch(
        self,
        encoder: CLIPTextModel,
        positives: Sequence[str],
        negatives: Sequence[str] | None,
        lora_key: tuple,
    ) -> torch.Tensor:
        """The UNet's encoder_hidden_states: the negative prompts' rows first when given
        (classifier-free guidance), each padded to the longest (3. above)."""
        rows = [self._encode(encoder, text, "prompt", lora_key) for text in positives]
        if negatives is not None:
            field = "negative_prompt"
            rows = [self._encode(encoder, text, field, lora_key) for text in negatives] + rows
        longest = max(row.shape[1] for row in rows)
        if any(row.shape[1] < longest for row in rows):
            empty = self._encode(encoder, "", "negative_prompt", lora_key)
            rows = [
                torch.cat([row, empty.repeat(1, (longest - row.shape[1]) // WINDOW, 1)], dim=1)
                for row in rows
            ]
        return torch.cat(rows)

    # -- encoding -----------------------------------------------------------------------------

    def _encode(
        self, encoder: CLIPTextModel, text: str, field: str, lora_key: tuple
    ) -> torch.Tensor:
        """(1, 77 x chunks, dim) hidden states of one prompt, cached."""
        key = (text, lora_key)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        parsed = self._parsed(text, field)
        if parsed.plain is not None:
            embeds = self._encode_plain(encoder, parsed.plain)
        else:
            embeds = self._encode_chunks(encoder, parsed.chunks, field)
        self._cache[key] = embeds
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return embeds

    def _encode_plain(self, encoder: CLIPTextModel, prompt: str) -> torch.Tensor:
        """As diffusers' encode_prompt: (1, 77, dim)."""
        tokenizer = self.tokenizer
        with self._tokenizer_lock:
            ids = tokenizer(
                [prompt],
                padding="max_length",
                max_length=tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids
        embeds = encoder(ids.to(encoder.device), attention_mask=None)[0]
        return embeds.to(dtype=encoder.dtype)

    def _encode_chunks(
        self, encoder: CLIPTextModel, chunks: list[_Chunk], field: str
    ) -> torch.Tensor:
        """As A1111: every chunk through the text encoder, emphasis applied (2. above)."""
        ids = torch.tensor([chunk.ids for chunk in chunks])
        # Embedding vectors get ids past the token table, whose rows they extend.
        table = encoder.get_input_embeddings().weight
        extra = []
        next_id = table.shape[0]
        for row, chunk in enumerate(chunks):
            for position, name in chunk.embeddings:
                vectors = self.embeddings.vectors(name, field)
                start, count = 1 + position, len(vectors)  # 1: after BOS
                ids[row, start : start + count] = torch.arange(next_id, next_id + count)
                next_id += count
                extra.append(vectors)
        ids = ids.to(encoder.device)
        if extra:
            # The token table's parameter name, to extend it with the vectors for this call.
            name = next(n for n, p in encoder.named_parameters() if p is table)
            extended = torch.cat([table, torch.cat(extra).to(table)])
            hidden = torch.func.functional_call(
                encoder, {name: extended}, (ids,), {"attention_mask": None}
            )[0]
        else:
            hidden = encoder(ids, attention_mask=None)[0]
        hidden = hidden.to(dtype=encoder.dtype)
        weights = torch.tensor([chunk.weights for chunk in chunks], device=hidden.device)
        weights = weights.to(hidden.dtype)[:, :, None]
        if not bool((weights == 1).all()):
            mean = hidden.mean(dim=(1, 2), keepdim=True)
            hidden = hidden * weights
            hidden = hidden * (mean / hidden.mean(dim=(1, 2), keepdim=True))
        return hidden.reshape(1, -1, hidden.shape[-1])

    # -- tokens -------------------------------------------------------------------------------

    def _tokens(self, text: str) -> list[int]:
        with self._tokenizer_lock:
            return self.tokenizer(text, add_special_tokens=False, verbose=False).input_ids

    def _parse(self, text: str, field: str) -> _Parsed:
        """The prompt as A1111 chunks it (2. above), and whether the plain path applies."""
        parts = prompts.emphasis(text, field)
        tokenizer = self.tokenizer
        bos = tokenizer.bos_token_id
        done: list[_Chunk] = []
        chunk = _Chunk()
        last_comma = -1

        def close() -> None:
            nonlocal chunk, last_comma
            done.append(chunk)
            chunk, last_comma = _Chunk(), -1

        for p, part in enumerate(parts):
            if p > 0:
                close()  # BREAK
            for fragment in part:
                tokens = self._tokens(fragment.text)
                position = 0
                while position < len(tokens):
                    token = tokens[position]
                    if token == self._comma:
                        last_comma = len(chunk.ids)
                    elif (
                        len(chunk.ids) == CHUNK_TOKENS
                        and last_comma != -1
                        and CHUNK_TOKENS - last_comma <= COMMA_BACKTRACK
                    ):
                        rest = chunk.split(last_comma + 1)
                        close()
                        chunk = rest
                    if len(chunk.ids) == CHUNK_TOKENS:
                        close()
                    found = self.embeddings.at(tokens, position)
                    if found is None:
                        chunk.ids.append(token)
                        chunk.weights.append(fragment.weight)
                        position += 1
                        continue
                    name, length = found
                    count = len(self.embeddings.vectors(name, field))
                    if len(chunk.ids) + count > CHUNK_TOKENS:
                        close()
                    chunk.embeddings.append((len(chunk.ids), name))
                    chunk.ids += [tokenizer.pad_token_id] * count  # replaced when encoded
                    chunk.weights += [fragment.weight] * count
                    position += length
        if chunk.ids or not done:
            close()

        only = parts[0][0]
        plain = (
            len(parts) == 1
            and len(parts[0]) == 1
            and only.weight == 1.0
            and len(done) == 1
            and not done[0].embeddings
        )
        for each in done:
            # BOS, the tokens, EOS, then padding: SD 1.5 pads with EOS, as A1111 does.
            pad = CHUNK_TOKENS - len(each.ids)
            each.ids = [bos, *each.ids, tokenizer.eos_token_id, *[tokenizer.pad_token_id] * pad]
            each.weights = [1.0, *each.weights, *[1.0] * (pad + 1)]
        return _Parsed(done, only.text if plain else None)
