"""Prompt syntax as A1111 (and ComfyUI) users type it, read into plain data. No torch here.

- `<lora:NAME>` and `<lora:NAME:WEIGHT>` (A1111's extra-network tags) name LoRAs; `take_loras`
  removes them from the text, as A1111 does, and returns them.
- Emphasis (`emphasis`): `(words)` multiplies their weight by 1.1, `[words]` divides it by
  1.1, `(words:1.3)` sets a factor; groups nest and multiply. `\\(`, `\\)`, `\\[`, `\\]` are
  literal brackets; a bracket that closes nothing is text, and one left open applies to the
  end of the prompt. `BREAK` (capitals, a word of its own) starts a new 75-token chunk.
  These are A1111's rules; `conditioning` turns the result into CLIP embeddings.

Not read: A1111's prompt editing (`[a:b:0.5]`, `[a|b]`), whose brackets are emphasis here.

Why not compel: it reads its own syntax (`ball++`, `(ball)1.3`, `.and()`), not A1111's, and
splits long prompts into 75-token chunks blindly (no comma backtrack, no BREAK), so prompts
copied from A1111 would mean something else. A1111's rules are short enough to hold here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import invalid, shown

EMPHASIS = 1.1  # (words): x1.1, [words]: /1.1, as A1111
# Largest |weight| a run may end up with: hidden states scaled past it overflow float16.
MAX_EMPHASIS = 100.0
# A1111's extra-network tags: <KIND:NAME[:ARGUMENTS]>.
_TAG = re.compile(r"<(\w+):([^>]+)>")
# The pieces of an emphasis prompt, in the order they are tried.
_PIECES = re.compile(
    r"""
    \\[()\[\]\\]                # an escaped bracket or backslash: literal
  | \\                          # a lone backslash
  | \( | \[                     # a group opens
  | :\s*([+-]?[.\d]+)\s*\)      # ':1.3)' closes a round group with a factor
  | \) | \]                     # a group closes
  | [^\\()\[\]:]+               # text
  | :                           # a colon that closes nothing: text
    """,
    re.VERBOSE,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*")


@dataclass(frozen=True)
class LoraTag:
    """A `<lora:NAME:WEIGHT>` tag; `text` is the tag as written, for messages."""

    name: str
    weight: float
    text: str


@dataclass(frozen=True)
class Fragment:
    """A run of prompt text with one emphasis weight."""

    text: str
    weight: float


def take_loras(text: str, field: str) -> tuple[str, list[LoraTag]]:
    """The text without its `<lora:...>` tags, and the tags. Other extra-network kinds
    (hypernetworks, ...) are refused: left in, they would reach the text encoder as words."""
    tags = []

    def take(match: re.Match) -> str:
        kind, arguments = match.group(1), match.group(2).split(":")
        if kind != "lora":
            raise invalid(
                field,
                f"{shown(match.group(0))} is an A1111 extra network Tether does not load; "
                "LoRAs are written <lora:NAME> or <lora:NAME:WEIGHT>",
            )
        if len(arguments) > 2:
            raise invalid(
                field, f"{shown(match.group(0))}: write <lora:NAME> or <lora:NAME:WEIGHT>"
            )
        weight = 1.0
        if len(arguments) == 2:
            try:
                weight = float(arguments[1])
            except ValueError:
                raise invalid(
                    field,
                    f"{shown(match.group(0))}: the weight {shown(arguments[1])} is not a number",
                ) from None
        tags.append(LoraTag(arguments[0].strip(), weight, match.group(0)))
        return ""

    return _TAG.sub(take, text), tags


def emphasis(text: str, field: str) -> list[list[Fragment]]:
    """The prompt as runs of text with their weights, one list per BREAK-separated part.
    Neighbouring runs of equal weight are joined; a prompt without syntax is one run of
    weight 1."""
    # 1. Pieces into [text, weight] runs; None stands for a BREAK.
    runs: list[list | None] = []
    round_groups: list[int] = []  # where each open group's runs start
    square_groups: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for run in runs[start:]:
            if run is not None:
                run[1] *= factor

    for match in _PIECES.finditer(text):
        piece, factor = match.group(0), match.group(1)
        if piece.startswith("\\"):
            runs.append([piece[1:], 1.0])  # a lone backslash is dropped, as A1111
        elif piece == "(":
            round_groups.append(len(runs))
        elif piece == "[":
            square_groups.append(len(runs))
        elif factor is not None and round_groups:
            multiply(round_groups.pop(), _number(factor, piece, field))
        elif piece == ")" and round_groups:
            multiply(round_groups.pop(), EMPHASIS)
        elif piece == "]" and square_groups:
            multiply(square_groups.pop(), 1 / EMPHASIS)
        else:
            for i, part in enumerate(_BREAK.split(piece)):
                if i > 0:
                    runs.append(None)
                runs.append([part, 1.0])
    for start in round_groups:
        multiply(start, EMPHASIS)
    for start in square_groups:
        multiply(start, 1 / EMPHASIS)

    # 2. Parts between BREAKs, neighbouring runs of equal weight joined (an empty run
    # keeps its neighbours apart, as in A1111), then empty runs left out.
    parts: list[list[Fragment]] = [[]]
    for run in runs:
        if run is None:
            parts.append([])
        elif parts[-1] and parts[-1][-1].weight == run[1]:
            parts[-1][-1] = Fragment(parts[-1][-1].text + run[0], run[1])
        else:
            parts[-1].append(Fragment(run[0], run[1]))
    parts = [[fragment for fragment in part if fragment.text] for part in parts]
    for part in parts:
        for fragment in part:
            if not abs(fragment.weight) <= MAX_EMPHASIS:
                raise invalid(
                    field,
                    f"{shown(fragment.text)} is weighted {fragment.weight:g}; emphasis weights "
                    f"must be -{MAX_EMPHASIS:g} to {MAX_EMPHASIS:g}",
                )
    return [part or [Fragment("", 1.0)] for part in parts]


def _number(text: str, piece: str, field: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise invalid(field, f"{shown(piece)}: {text} is not a number") from None
