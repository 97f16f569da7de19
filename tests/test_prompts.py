"""Prompt syntax as A1111 reads it: its emphasis parser and weighting, long prompts in
chunks of 75, textual-inversion embeddings against diffusers' `load_textual_inversion`,
and plain prompts bit-exact with diffusers' `encode_prompt`.
Reached tolerances: bit-exact (max difference 0.0) on CPU float32 for plain prompts and
embeddings; emphasis within 1e-6 of A1111's formula computed here by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionControlNetPipeline
from lora_files import save_embedding
from safetensors.torch import save_file
from tether_server import models, prompts, schedulers
from tether_server.catalog import Catalog, EmbeddingFile
from tether_server.engine import Engine, Job
from tether_server.errors import InvalidArgument
from tether_server.prompts import Fragment

PROMPT = "a photo of cathead on the grass"
NEGATIVE = "badhands, blurry"

# A1111's own examples of its parser (prompt_parser.parse_prompt_attention's docstring).
A1111_EXAMPLES = {
    "normal text": [("normal text", 1.0)],
    "an (important) word": [("an ", 1.0), ("important", 1.1), (" word", 1.0)],
    "(unbalanced": [("unbalanced", 1.1)],
    "\\(literal\\]": [("(literal]", 1.0)],
    "(unnecessary)(parens)": [("unnecessaryparens", 1.1)],
    "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).": [
        ("a ", 1.0),
        ("house", 1.5730000000000004),
        (" ", 1.1),
        ("on", 1.0),
        (" a ", 1.1),
        ("hill", 0.55),
        (", sun, ", 1.1),
        ("sky", 1.4641000000000006),
        (".", 1.1),
    ],
}


@pytest.mark.parametrize("text", A1111_EXAMPLES)
def test_emphasis_reads_as_a1111(text):
    (part,) = prompts.emphasis(text, "prompt")
    assert [(f.text, pytest.approx(f.weight)) for f in part] == A1111_EXAMPLES[text]


def test_break_starts_a_new_part():
    assert prompts.emphasis("a (cat) BREAK on a mat", "prompt") == [
        [Fragment("a ", 1.0), Fragment("cat", 1.1)],
        [Fragment("on a mat", 1.0)],
    ]


def test_a_factor_that_is_no_number_names_the_field():
    with pytest.raises(InvalidArgument, match=r"negative_prompt: ':1\.2\.3\)': 1\.2\.3 is not"):
        prompts.emphasis("(red:1.2.3)", "negative_prompt")


def test_emphasis_past_float16s_range_is_refused():
    with pytest.raises(InvalidArgument, match="prompt: 'red' is weighted 1000; emphasis"):
        prompts.emphasis("a (red:1000) cat", "prompt")
    with pytest.raises(InvalidArgument, match="weighted inf"):
        prompts.emphasis(f"(red:{'9' * 400})", "prompt")


def test_lora_tags_are_taken_out():
    text, tags = prompts.take_loras("a cat <lora:detail:0.6>, <lora:style>", "prompt")
    assert text == "a cat , "
    assert [(t.name, t.weight, t.text) for t in tags] == [
        ("detail", 0.6, "<lora:detail:0.6>"),
        ("style", 1.0, "<lora:style>"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<hypernet:x:1>", "extra network Tether does not load"),
        ("<lora:x:strong>", "the weight 'strong' is not a number"),
        ("<lora:x:0.5:0.7>", "write <lora:NAME> or <lora:NAME:WEIGHT>"),
    ],
)
def test_bad_tags_are_refused(text, message):
    with pytest.raises(InvalidArgument, match=f"prompt: .*{message}"):
        prompts.take_loras(text, "prompt")


# -- encodings -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedding_files(tmp_path_factory) -> dict:
    """cathead: 2 vectors, A1111 format; badhands: 1 vector, diffusers format; wide: SD 2's
    width; sdxl: SDXL's layout."""
    folder = tmp_path_factory.mktemp("embeddings")
    generator = torch.Generator().manual_seed(9)
    save_file(
        {"clip_l": torch.zeros(1, 768), "clip_g": torch.zeros(1, 1280)},
        folder / "sdxl.safetensors",
    )
    return {
        "cathead": save_embedding(
            torch.randn(2, 32, generator=generator), folder / "cathead.safetensors", "a1111"
        ),
        "badhands": save_embedding(
            torch.randn(1, 32, generator=generator), folder / "badhands.safetensors", "diffusers"
        ),
        "wide": save_embedding(torch.zeros(1, 1024), folder / "wide.safetensors", "a1111"),
        "sdxl": folder / "sdxl.safetensors",
    }


@pytest.fixture(scope="module")
def engine(embedding_files) -> Engine:
    embeddings = {name: EmbeddingFile(name, path) for name, path in embedding_files.items()}
    return Engine(models.tiny(), catalog=Catalog(embeddings=embeddings))


def pipeline(model_set) -> StableDiffusionControlNetPipeline:
    return StableDiffusionControlNetPipeline(
        vae=model_set.vae,
        text_encoder=model_set.text_encoder,
        tokenizer=model_set.tokenizer,
        unet=model_set.unet,
        controlnet=model_set.controls["canny"].model,
        scheduler=schedulers.create("unipc", model_set.scheduler_config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def encoded(engine: Engine, prompt: str, negative: str | None = None) -> torch.Tensor:
    with torch.inference_mode():
        negatives = None if negative is None else [negative]
        return engine.prompts("").batch(engine.models.text_encoder, [prompt], negatives, ())


def test_plain_prompts_are_bit_exact_with_diffusers(engine):
    theirs, theirs_negative = pipeline(engine.models).encode_prompt(
        "a lighthouse on a cliff", "cpu", 1, True, "blurry"
    )
    ours = encoded(engine, "a lighthouse on a cliff", "blurry")
    assert torch.equal(ours, torch.cat([theirs_negative, theirs]))
    # Weight 1 everywhere is plain too.
    assert torch.equal(encoded(engine, "(a lighthouse on a cliff:1.0)"), theirs)


def test_embeddings_match_diffusers_load_textual_inversion(engine, embedding_files):
    reference = models.tiny()
    pipe = pipeline(reference)
    for name in ("cathead", "badhands"):
        pipe.load_textual_inversion(str(embedding_files[name]), token=name)
    theirs, theirs_negative = pipe.encode_prompt(PROMPT, "cpu", 1, True, NEGATIVE)
    ours = encoded(engine, PROMPT, NEGATIVE)
    assert torch.equal(ours, torch.cat([theirs_negative, theirs]))
    # The embeddings are used: without them the words are only letters.
    plain = Engine(models.tiny())
    for text in (PROMPT, NEGATIVE):
        assert not torch.equal(encoded(engine, text), encoded(plain, text))


def test_emphasis_weights_hidden_states_as_a1111(engine):
    """(red:1.5) and [cat]: every token's hidden state times its weight, then the chunk
    scaled back to its former mean."""
    tokenizer, encoder = engine.models.tokenizer, engine.models.text_encoder
    runs = [("a ", 1.0), ("red", 1.5), (" ", 1.0), ("cat", 1 / 1.1)]
    ids, weights = [tokenizer.bos_token_id], [1.0]
    for text, weight in runs:
        tokens = tokenizer(text, add_special_tokens=False).input_ids
        ids += tokens
        weights += [weight] * len(tokens)
    pad = 77 - len(ids)
    ids += [tokenizer.eos_token_id] * pad
    weights += [1.0] * pad
    with torch.inference_mode():
        hidden = encoder(torch.tensor([ids]))[0]
        scaled = hidden * torch.tensor(weights)[None, :, None]
        expected = scaled * (hidden.mean() / scaled.mean())
    ours = encoded(engine, "a (red:1.5) [cat]")
    assert torch.allclose(ours, expected, atol=1e-6)
    assert not torch.allclose(ours, encoded(engine, "a red cat"), atol=1e-3)


def letters(count: int) -> str:
    """`count` one-token words (the tiny tokenizer reads one letter as one token)."""
    return " ".join(chr(ord("a") + i % 26) for i in range(count))


def test_long_prompts_are_chunks_of_75(engine):
    windows = engine.prompts("").windows(letters(100), "prompt")
    tokenizer = engine.models.tokenizer
    assert [len(window) for window in windows] == [77, 77]
    assert [window[0] for window in windows] == [tokenizer.bos_token_id] * 2
    assert windows[0][76] == tokenizer.eos_token_id
    assert windows[1][1:26] == tokenizer(letters(100), add_special_tokens=False).input_ids[75:]
    assert encoded(engine, letters(100)).shape == (1, 154, 32)


def test_words_after_a_late_comma_move_to_the_next_chunk(engine):
    """A1111: a chunk that fills up with a comma among its last 20 tokens ends at the comma."""
    windows = engine.prompts("").windows(f"{letters(70)}, {letters(10)}", "prompt")
    comma = engine.models.tokenizer.convert_tokens_to_ids(",</w>")
    assert windows[0][71:73] == [comma, engine.models.tokenizer.eos_token_id]
    assert windows[1][1:11] == windows[0][1:11]  # letters a..j start the next chunk


def test_break_starts_a_new_chunk(engine):
    windows = engine.prompts("").windows("a cat BREAK a dog", "prompt")
    assert len(windows) == 2
    assert windows[1][1:4] == engine.prompts("").windows("a dog", "prompt")[0][1:4]


def test_the_shorter_of_prompt_and_negative_is_padded_with_the_empty_prompt(engine):
    rows = encoded(engine, letters(100), "blurry")
    assert rows.shape == (2, 154, 32)
    assert torch.equal(rows[:1, :77], encoded(engine, "blurry"))
    assert torch.equal(rows[:1, 77:], encoded(engine, ""))


def test_jobs_are_batched_by_their_prompts_length(engine):
    def key(prompt: str, negative: str = "", guidance: float = 7.5) -> tuple:
        job = Job(
            prompt=prompt,
            negative_prompt=negative,
            steps=2,
            guidance_scale=guidance,
            width=32,
            height=32,
        )
        return engine.batch_key(job)

    assert key("a cat") != key(letters(100))
    assert key("a cat", letters(100)) == key(letters(100), "a dog")
    assert key("a cat", letters(100), guidance=1.0) == key("a dog", guidance=1.0)


def test_tokens_past_77_change_the_image(engine):
    """Two prompts that differ only after the 90th token: diffusers cuts both to the same
    77 tokens (same image); the engine reads them whole."""

    def job(prompt: str) -> Job:
        return Job(prompt=prompt, seed=1, steps=2, guidance_scale=7.5, width=32, height=32)

    first, second = f"{letters(90)} x", f"{letters(90)} y"
    ours = [engine.run([job(prompt)])[0].image for prompt in (first, second)]
    assert np.abs(ours[0] - ours[1]).max() > 1e-3
    pipe = pipeline(engine.models)
    pipe.set_progress_bar_config(disable=True)
    theirs = [pipe.encode_prompt(prompt, "cpu", 1, False)[0] for prompt in (first, second)]
    assert torch.equal(theirs[0], theirs[1])


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("sdxl", "is an SDXL embedding"),
        ("wide", r"holds vectors of shape \(1, 1024\); this text encoder takes 32-wide"),
    ],
)
def test_embeddings_for_other_models_are_refused_naming_the_field(engine, name, message):
    job = Job(
        prompt="x", negative_prompt=f"a {name}", steps=2, guidance_scale=7.5, width=32, height=32
    )
    with pytest.raises(
        InvalidArgument, match=f"negative_prompt: the embedding '{name}'.*{message}"
    ):
        engine.check(job)
    engine.check(Job(prompt="x", steps=2, guidance_scale=7.5, width=32, height=32))
