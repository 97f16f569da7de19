"""Regenerate sd15/tokenizer/vocab.json and merges.txt from OpenAI CLIP's BPE file.

SD 1.5's text encoder is OpenAI's CLIP ViT-L/14, whose tokenizer is a byte-level BPE whose
merges ship as `bpe_simple_vocab_16e6.txt.gz` (OpenAI CLIP, MIT licence; also inside the
`open-clip-torch` wheel on PyPI as open_clip/bpe_simple_vocab_16e6.txt.gz). The vocabulary
is derived from it exactly as CLIP's own simple_tokenizer.py does: the 256 byte characters,
the same with `</w>`, one token per merge (the first 48894), then the two special tokens.

    pip download --no-deps open-clip-torch==3.3.0 -d /tmp/oc
    python server/tether_server/configs/derive_clip_tokenizer.py \
        /tmp/oc/open_clip_torch-3.3.0-py3-none-any.whl

The argument may also be the .txt.gz itself. tests/test_sd15_configs.py checks the result
against token ids of SD 1.5's tokenizer.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
import zipfile
from pathlib import Path

OUT = Path(__file__).resolve().parent / "sd15" / "tokenizer"
WHEEL_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
# CLIP's vocabulary size is 49408: 512 byte tokens + 48894 merges + 2 specials.
MERGES = 49152 - 256 - 2


def byte_characters() -> list[str]:
    """CLIP's (and GPT-2's) printable stand-in for each byte, in CLIP's vocabulary order:
    the printable Latin-1 bytes as themselves, then the rest mapped past U+0100."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    characters = [chr(b) for b in printable]
    others = [b for b in range(256) if b not in printable]
    characters += [chr(256 + n) for n in range(len(others))]
    return characters


def derive(bpe_gz: bytes) -> tuple[dict[str, int], list[str]]:
    lines = gzip.decompress(bpe_gz).decode("utf-8").split("\n")
    merges = lines[1 : MERGES + 1]  # the first line is a version header
    characters = byte_characters()
    tokens = characters + [c + "</w>" for c in characters]
    tokens += ["".join(merge.split()) for merge in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}, merges


def main(source: str) -> None:
    data = Path(source).read_bytes()
    if source.endswith(".whl"):
        data = zipfile.ZipFile(io.BytesIO(data)).read(WHEEL_MEMBER)
    vocab, merges = derive(data)
    (OUT / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n")
    (OUT / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
