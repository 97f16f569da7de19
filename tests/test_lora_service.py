"""LoRAs and embeddings through a real `tether serve` on a real port, named in its models
file: the SDK's `tether.Lora`, prompt tags, ListModels, the CLI, live sessions, and
refusals that leave the server serving."""

from __future__ import annotations

import model_files
import numpy as np
import pytest
import tether
import torch
from conftest import Server
from lora_files import random_lora, save_diffusers, save_embedding
from tether import cli
from tether_server import models

OPTIONS = {"steps": 2, "seed": 3, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def address(tmp_path_factory):
    """`tether serve --models` with the tiny model as a diffusers folder, two LoRAs and an
    embedding, as a user's models file names them."""
    folder = tmp_path_factory.mktemp("catalog")
    layout = models.tiny()
    model_files.diffusers_folder(layout, folder / "tiny")
    for name, seed in (("detail", 1), ("style", 2)):
        save_diffusers(random_lora(layout, seed), folder / f"{name}.safetensors")
    vectors = torch.randn(1, 32, generator=torch.Generator().manual_seed(4))
    save_embedding(vectors, folder / "badhands.safetensors", "a1111")
    toml = folder / "models.toml"
    toml.write_text(
        '[models.tiny]\npath = "tiny"\n'
        '[loras.detail]\npath = "detail.safetensors"\n'
        '[loras.style]\npath = "style.safetensors"\n'
        '[embeddings.badhands]\npath = "badhands.safetensors"\n'
    )
    running = Server("--models", str(toml), "--max-pixels", "4096", "--max-steps", "10")
    yield running.wait_serving().address
    running.stop()


def test_models_list_loras_and_embeddings(address):
    with tether.Client(address) as client:
        listing = client.models()
    assert listing.loras == [tether.LoraModel("detail"), tether.LoraModel("style")]
    assert listing.embeddings == [tether.Embedding("badhands")]


def test_loras_from_the_sdk_and_from_prompt_tags_give_one_image(address):
    with tether.Client(address) as client:
        plain = client.generate("a castle", **OPTIONS).image
        by_field = client.generate(
            "a castle", loras=[tether.Lora("detail", 0.5), tether.Lora("style")], **OPTIONS
        ).image
        by_tag = client.generate("a castle <lora:detail:0.5> <lora:style>", **OPTIONS).image
    assert np.array_equal(by_field, by_tag)
    assert np.abs(by_field.astype(int) - plain).max() > 10


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"loras": [tether.Lora("missing")]}, tether.NotFound, "loras[0]: no LoRA 'missing'"),
        (
            {"prompt": "a castle <lora:missing:0.5>"},
            tether.NotFound,
            "prompt '<lora:missing:0.5>': no LoRA 'missing'; this server has detail, style",
        ),
        (
            {"loras": [tether.Lora("detail", 12)]},
            tether.InvalidArgument,
            "loras[0]: weight must be -10 to 10 (got 12)",
        ),
        (
            {"negative_prompt": "<lora:detail:0.5>"},
            tether.InvalidArgument,
            "negative_prompt: '<lora:detail:0.5>': a LoRA changes the model",
        ),
        (
            {"loras": [tether.Lora("detail")], "prompt": "<lora:detail:0.3>"},
            tether.InvalidArgument,
            "prompt '<lora:detail:0.3>': names the LoRA 'detail' again",
        ),
    ],
)
def test_bad_loras_are_refused_and_the_server_goes_on(address, options, error, message):
    options = {"prompt": "a castle", **OPTIONS, **options}
    with tether.Client(address) as client:
        with pytest.raises(error) as raised:
            client.generate(options.pop("prompt"), **options)
        assert message in str(raised.value)
        client.generate("a castle badhands", loras=[tether.Lora("detail", 0.8)], **OPTIONS)


def test_the_sdk_refuses_what_is_not_a_lora():
    with pytest.raises(TypeError, match=r"loras\[0\]: expected tether.Lora\(name, weight\)"):
        tether.protocol.generate_request("x", loras=[("detail", 0.5)])
    request = tether.protocol.generate_request("x", loras=[tether.Lora("detail", 0.5)])
    assert [(lora.name, lora.weight) for lora in request.loras] == [("detail", 0.5)]


def test_live_sessions_take_loras(address):
    colour = np.zeros((64, 64, 3), dtype=np.uint8)
    results = {}
    for loras in ([], [tether.Lora("detail")], [tether.Lora("missing")]):
        config = tether.LiveConfig("a village", loras=loras, strength=1.0)
        with tether.Client(address) as client, client.live(config) as session:
            session.send(tether.LiveFrame(1, colour))
            session.close()
            results[len(results)] = list(session)
    assert isinstance(results[0][-1], tether.LiveResult)
    assert isinstance(results[1][-1], tether.LiveResult)
    assert not np.array_equal(results[0][-1].image, results[1][-1].image)
    assert "no LoRA 'missing'" in results[2][0].message


def test_the_cli_lists_and_applies_loras(address, tmp_path, capsys):
    assert cli.main(["models", "--server", address]) == 0
    listing = capsys.readouterr().out
    assert "lora     detail\nlora     style\nembedding badhands\n" in listing
    out = tmp_path / "out.png"
    args = ["generate", "a castle", "--lora", "detail@0.5", "--lora", "style", "-o", str(out)]
    sizes = ["--steps", "2", "--width", "64", "--height", "64", "--server", address]
    assert cli.main(args + sizes) == 0
    assert out.exists()


def test_parse_lora():
    assert cli.parse_lora("detail@0.6") == tether.Lora("detail", 0.6)
    assert cli.parse_lora("detail") == tether.Lora("detail", 1.0)
    with pytest.raises(Exception, match="weight 'x' is not a number"):
        cli.parse_lora("detail@x")
