"""The trained small model's architecture, with random weights, for `tether train base`.

SD-1.5-shaped so that every engine feature and diffusers' pipelines apply unchanged: a
KL autoencoder with 4 latent channels and factor 8, a UNet with cross-attention on a
77-token CLIP text encoder, and ControlNets made from the UNet (`ControlNetModel.from_unet`)
— only narrower. The tokenizer is the byte-level one of docs/conventions.md ("The tiny
tokenizer") with merges learned from the scene captions' words, so each caption word is
one token and any other text still tokenizes, byte by byte.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from tokenizers.pre_tokenizers import ByteLevel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from .. import scenes
from ..models import SD15_SCHEDULER_CONFIG, ModelSet

SIZE = 128  # the images it is trained on and draws by default
# The ControlNets' hint encoder (128² map -> 16² features): SD's (16, 32, 96, 256), narrower.
HINT_CHANNELS = (8, 16, 32, 64)


def learn_merges(words: Iterable[str]) -> list[tuple[str, str]]:
    """Byte-pair merges that make every word one token (Sennrich et al.'s BPE: merge the
    most frequent adjacent pair, ties by the pair's text, until no word has two pieces).
    CLIP's tokenizer applies merges by rank, which replays exactly these merges."""
    pieces = {w: [*w[:-1], w[-1] + "</w>"] for w in sorted(set(words))}
    merges = []
    while True:
        counts = Counter(pair for p in pieces.values() for pair in zip(p, p[1:]))
        if not counts:
            return merges
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        merges.append(best)
        for word, p in pieces.items():
            merged, i = [], 0
            while i < len(p):
                if tuple(p[i : i + 2]) == best:
                    merged.append(p[i] + p[i + 1])
                    i += 2
                else:
                    merged.append(p[i])
                    i += 1
            pieces[word] = merged


def tokenizer(words: Iterable[str] = scenes.CAPTION_WORDS) -> CLIPTokenizer:
    """The byte-level CLIP tokenizer: 256 byte characters, the same with `</w>`, the
    merged tokens of `words`, then `<|startoftext|>` and `<|endoftext|>`."""
    alphabet = sorted(ByteLevel.alphabet())
    merges = learn_merges(words)
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "vocab.json").write_text(json.dumps(vocab))
        lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
        Path(folder, "merges.txt").write_text("\n".join(lines) + "\n")
        return CLIPTokenizer.from_pretrained(folder, model_max_length=77)


def random_model_set(seed: int) -> ModelSet:
    """The small model's base (no ControlNets) with random weights; same seed, same
    weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tok = tokenizer()
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tok),
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=3,
                num_attention_heads=4,
                max_position_embeddings=77,
                bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
            )
        )
        unet = UNet2DConditionModel(
            sample_size=SIZE // 8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64, 64),
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            layers_per_block=1,
            cross_attention_dim=64,
            attention_head_dim=(2, 4, 4),  # diffusers' name for the number of heads: 16 wide
            norm_num_groups=8,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(16, 32, 64, 64),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=SIZE,
            # Set from the trained autoencoder's latents (objectives.scaling_factor).
            scaling_factor=1.0,
        )
    return ModelSet(
        name="tiny",
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tok,
        scheduler_config=dict(SD15_SCHEDULER_CONFIG),
        controls={},
    )
