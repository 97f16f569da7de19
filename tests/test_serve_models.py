"""`tether serve` with models it cannot serve: one line naming the file and the fix, exit
status 2, before any port is bound, no traceback, no request to a model hub."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import model_files
import pytest
import torch
from conftest import free_port
from safetensors.torch import load_file, save_file
from tether.cli import _parser
from tether_server import serve


def fake(path: Path, tensors: dict[str, tuple[int, ...]]) -> Path:
    save_file({name: torch.zeros(shape) for name, shape in tensors.items()}, path)
    return path


@pytest.fixture(scope="module")
def files(tiny_models, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad-models")
    model_files.diffusers_folder(tiny_models, root / "tiny")
    fake(root / "lora.safetensors", {"lora_unet_a.lora_down.weight": (4, 8)})
    (root / "old.ckpt").write_bytes(b"pickle")
    (root / "empty").mkdir()
    return root


CASES = {
    "missing file": (["--models", "{root}/nope.toml"], "{root}/nope.toml: [Errno 2] No such file"),
    "bad toml": (["--models", "{toml}"], "{toml}: Expected ']'", "[models.x\npath='tiny'"),
    "unknown table": (["--models", "{toml}"], "{toml}: unknown table or key 'lora'", "[lora.x]"),
    "unknown key": (
        ["--models", "{toml}"],
        "{toml}: [models.x] has an unknown key 'vea'; known: path, hub, vae, config",
        "[models.x]\npath='tiny'\nvea='v.safetensors'",
    ),
    "missing model": (
        ["--models", "{toml}"],
        "{toml}: [models.x] path: no such file or folder {root}/dreamshaper_8.safetensors",
        "[models.x]\npath='dreamshaper_8.safetensors'",
    ),
    "pickle": (
        ["--models", "{toml}"],
        "{root}/old.ckpt: a pickle checkpoint; only .safetensors files are loaded",
        "[models.x]\npath='old.ckpt'",
    ),
    "wrong kind": (
        ["--models", "{toml}"],
        "{root}/lora.safetensors: a LoRA, not an SD 1.5 checkpoint as [models.x] needs; name it "
        "in a [loras.NAME] table",
        "[models.x]\npath='lora.safetensors'",
    ),
    "missing folder": (["--models-dir", "{root}/nowhere"], "--models-dir {root}/nowhere: no such"),
    "folder without a layout": (
        ["--models-dir", "{root}/empty"],
        "--models-dir {root}/empty: holds none of ComfyUI's checkpoints/",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_a_failure_is_one_line_and_status_2(files, capsys, case):
    arguments, expected, *toml_text = CASES[case]
    toml = files / f"{case.replace(' ', '-')}.toml"
    if toml_text:
        toml.write_text(toml_text[0])
    arguments = [a.format(root=files, toml=toml) for a in arguments]
    args = _parser().parse_args(["serve", "--port", "0", *arguments])
    assert serve.main(args) == 2  # returned before asyncio.run: no port was bound
    stderr = capsys.readouterr().err
    assert stderr.startswith(f"tether serve: {expected.format(root=files, toml=toml)}")
    assert stderr.count("\n") == 1


class HubStandIn:
    """A local listener standing in for the model hub: counts connections."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.socket.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            connection, _ = self.socket.accept()
            self.connections += 1
            connection.close()


def serve_process(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "tether", "serve", "--port", str(free_port()), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def test_a_missing_local_file_makes_no_hub_request(tmp_path):
    hub = HubStandIn()
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"))
    toml = tmp_path / "models.toml"
    toml.write_text('[models.dreamshaper]\npath = "dreamshaper_8.safetensors"\n')
    done = serve_process("--models", str(toml), env=env)
    assert done.returncode == 2
    assert done.stderr == (
        f"tether serve: {toml}: [models.dreamshaper] path: no such file or folder "
        f"{tmp_path}/dreamshaper_8.safetensors\n"
    )
    assert hub.connections == 0


def test_a_model_that_fails_to_load_stops_the_server_cleanly(tiny_models, tmp_path):
    """Weights are read after the port is bound (loading stays lazy); a default model that
    cannot load still ends in one line and status 2, without a traceback."""
    model_files.single_file(tiny_models, tmp_path / "tiny.safetensors")
    state = load_file(tmp_path / "tiny.safetensors")
    del state["model.diffusion_model.out.2.weight"]
    save_file(state, tmp_path / "cut.safetensors")
    model_files.configs(tiny_models, tmp_path / "configs")
    toml = tmp_path / "models.toml"
    toml.write_text('[models.cut]\npath = "cut.safetensors"\nconfig = "configs"\n')
    done = serve_process("--models", str(toml), env=dict(os.environ))
    assert done.returncode == 2
    last = done.stderr.splitlines()[-1]
    assert last == (
        f"tether serve: {tmp_path}/cut.safetensors: cannot load it as an SD 1.5 checkpoint: "
        "weights are missing (is the file complete, and of the model its config describes?)"
    )
    assert "Traceback" not in done.stderr
    assert "Exception ignored" not in done.stderr
