"""The models a server offers, by name, from a TOML file, a models folder, or both.

Plain data, checked before the server listens: every file exists, is safetensors and holds
what its table or folder says (`checkpoints`), every table and key is known. No weights are
loaded here; `registry` loads them on first use.

A TOML file (relative paths are relative to it):

    [models.dreamshaper]                        # a base model; the first one is the default
    path = "dreamshaper_8.safetensors"          # a single file or a diffusers folder
    vae = "vae-ft-mse-840000-ema-pruned.safetensors"   # optional: another VAE
    [models.sd15]
    hub = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # a hub id instead of a path
    [controls.depth]
    path = "control_v11f1p_sd15_depth_fp16.safetensors"
    kind = "depth"                              # optional where the file name tells
    [loras.detail]
    path = "add_detail.safetensors"
    [embeddings.easynegative]
    path = "easynegative.safetensors"

A single file's components are built from diffusers-format configs: SD 1.5's, shipped in
configs/sd15, unless the table names its own with `config = "FOLDER"`. The older form,
`name = "..."` with one `[base]` table, is one model.

A models folder (`--models-dir`) is ComfyUI's (checkpoints/, controlnet/, loras/,
embeddings/, diffusers/) or A1111's (Stable-diffusion/, ControlNet/, Lora/, embeddings/)
layout, searched to any depth. A file is named by its stem; a ControlNet's kind comes from
its file name. Files Tether cannot use (SDXL models, pickles, ...) are left out, each with a
line saying why. The TOML comes first: its names win a clash with the folder's, and a file
the TOML names is not listed again under its stem.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import checkpoints
from .errors import ModelConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

# SD 1.5's diffusers-format configs and tokenizer, for single-file checkpoints.
SD15_CONFIGS = Path(__file__).resolve().parent / "configs" / "sd15"

# Kinds of control map a ControlNet can expect; `kind` in the TOML must be one of these.
CONTROL_KINDS = (
    "canny",
    "depth",
    "normal",
    "lineart",
    "scribble",
    "softedge",
    "seg",
    "inpaint",
    "openpose",
    "mlsd",
    "tile",
)
# Words in ControlNet file names -> kind (control_v11p_sd15_normalbae, control_sd15_hed, ...).
_KIND_WORDS = {
    **{kind: kind for kind in CONTROL_KINDS},
    "normalbae": "normal",
    "hed": "softedge",
    "pidi": "softedge",
    "pose": "openpose",
}

_TABLE_KEYS = {
    "models": ("path", "hub", "vae", "config"),
    "controls": ("path", "hub", "kind", "config"),
    "loras": ("path",),
    "embeddings": ("path",),
}
_LEGACY_KEYS = ("name", "base")
# Sub-folders of a models folder (lower-cased: ComfyUI's and A1111's names) -> what they hold.
_FOLDERS = {
    "checkpoints": "base",
    "stable-diffusion": "base",
    "diffusers": "base",
    "controlnet": "controlnet",
    "loras": "lora",
    "lora": "lora",
    "embeddings": "embedding",
}
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


@dataclass(frozen=True)
class BaseEntry:
    """A base model: `path` (a .safetensors file or a diffusers folder) or a `hub` id."""

    name: str
    path: Path | None
    hub: str | None
    config: Path | None  # single files: the diffusers-format configs of their components
    vae: Path | None  # another VAE (a .safetensors file or a diffusers folder), or None
    family: str
    default_size: int


@dataclass(frozen=True)
class ControlEntry:
    """A ControlNet: `path` (a .safetensors file or a diffusers folder) or a `hub` id."""

    name: str
    kind: str
    path: Path | None
    hub: str | None
    config: Path | None  # single files: the folder holding their config.json


@dataclass(frozen=True)
class LoraFile:
    name: str
    path: Path  # a .safetensors file


@dataclass(frozen=True)
class EmbeddingFile:
    name: str
    path: Path  # a .safetensors file


@dataclass
class Catalog:
    """Every model a server offers, by name; the first base model is the default."""

    models: dict[str, BaseEntry] = field(default_factory=dict)
    controls: dict[str, ControlEntry] = field(default_factory=dict)
    loras: dict[str, LoraFile] = field(default_factory=dict)
    embeddings: dict[str, EmbeddingFile] = field(default_factory=dict)
    # Files of the models folder left out, one line each saying why.
    left_out: list[str] = field(default_factory=list)

    @property
    def default(self) -> str:
        return next(iter(self.models))


def read(models_file: Path | None = None, models_dir: Path | None = None) -> Catalog:
    """The catalog of a TOML file and/or a models folder; ModelConfigError, one line naming
    the file and the fix, for anything that cannot be served."""
    catalog = Catalog()
    if models_file is not None:
        _read_toml(Path(models_file), catalog)
    if models_dir is not None:
        _scan(Path(models_dir), catalog)
    if not catalog.models:
        where = " and ".join(
            str(p) for p in (models_file, models_dir and Path(models_dir) / "checkpoints") if p
        )
        raise ModelConfigError(
            f"{where}: no SD 1.5 base model to serve; add a [models.NAME] table with its path, "
            "or put a checkpoint in the models folder's checkpoints/ (A1111: Stable-diffusion/)"
        )
    return catalog


def control_kind(name: str) -> str | None:
    """The kind a ControlNet's file name tells (`control_v11p_sd15_normalbae` -> normal), or
    None when it names no kind or more than one."""
    words = re.split(r"[^a-z0-9]+", name.lower())
    kinds = {_KIND_WORDS[word] for word in words if word in _KIND_WORDS}
    if not kinds:  # CamelCase names: controlnetPreTrained_cannyDifferenceV10
        kinds = {kind for word, kind in _KIND_WORDS.items() if word in name.lower()}
    return kinds.pop() if len(kinds) == 1 else None


# -- the TOML file ---------------------------------------------------------------------------


def _read_toml(file: Path, catalog: Catalog) -> None:
    try:
        config = tomllib.loads(file.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ModelConfigError(f"{file}: {error}") from error
    for key in config:
        if key not in _TABLE_KEYS and key not in _LEGACY_KEYS:
            raise ModelConfigError(
                f"{file}: unknown table or key {key!r}; a models file has [models.NAME], "
                "[controls.NAME], [loras.NAME] and [embeddings.NAME] tables"
            )
    tables = {kind: _tables(file, config, kind) for kind in _TABLE_KEYS}
    if "base" in config:
        if tables["models"]:
            raise ModelConfigError(
                f"{file}: has both [base] and [models.NAME] tables; write the [base] model "
                "as one more [models.NAME] table"
            )
        base = config["base"]
        if not isinstance(base, dict):
            raise ModelConfigError(f'{file}: base must be a table: [base] path = "..."')
        _check_keys(file, "base", base, _TABLE_KEYS["models"])
        tables["models"] = {_string(file, "name", config.get("name", file.stem)): base}
    elif "name" in config:
        raise ModelConfigError(
            f"{file}: name = ... names the [base] model; with [models.NAME] tables the NAME is "
            "the model's name"
        )

    for name, entry in tables["models"].items():
        where = f"[models.{name}]" if "base" not in config else "[base]"
        source = _source(file, entry, where)
        config_dir = _local(file, entry, "config", where) if "config" in entry else None
        vae = _local(file, entry, "vae", where) if "vae" in entry else None
        _add(catalog, "models", _base_entry(name, *source, config_dir, vae, where))
    for name, entry in tables["controls"].items():
        where = f"[controls.{name}]"
        kind = _string(file, f"{where} kind", entry["kind"]) if "kind" in entry else None
        if kind is not None and kind not in CONTROL_KINDS:
            raise ModelConfigError(
                f"{file}: {where} kind must be one of {', '.join(CONTROL_KINDS)} (got {kind!r})"
            )
        config_dir = _local(file, entry, "config", where) if "config" in entry else None
        _add(
            catalog,
            "controls",
            _control_entry(name, *_source(file, entry, where), kind, config_dir, where),
        )
    for table, kind, cls in (
        ("loras", "lora", LoraFile),
        ("embeddings", "embedding", EmbeddingFile),
    ):
        for name, entry in tables[table].items():
            where = f"[{table}.{name}]"
            if "path" not in entry:
                raise ModelConfigError(f'{file}: {where} needs path = "FILE.safetensors"')
            path = _local(file, entry, "path", where)
            checkpoints.check(path, kind, where)
            _add(catalog, table, cls(name, path))


def _tables(file: Path, config: dict, kind: str) -> dict[str, dict]:
    """config[kind] as NAME -> table, each table's keys checked."""
    tables = config.get(kind, {})
    if not isinstance(tables, dict):
        raise ModelConfigError(f"{file}: {kind} must be tables, e.g. [{kind}.NAME]")
    for name, entry in tables.items():
        if not isinstance(entry, dict):
            raise ModelConfigError(
                f"{file}: {kind}.{name} must be a table: [{kind}.NAME] with "
                f"{' / '.join(_TABLE_KEYS[kind])} = ..."
            )
        _check_keys(file, f"{kind}.{name}", entry, _TABLE_KEYS[kind])
    return tables


def _check_keys(file: Path, where: str, entry: dict, known: tuple[str, ...]) -> None:
    for key in entry:
        if key not in known:
            raise ModelConfigError(
                f"{file}: [{where}] has an unknown key {key!r}; known: {', '.join(known)}"
            )


def _string(file: Path, where: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ModelConfigError(f"{file}: {where} must be a non-empty string (got {value!r})")
    return value


def _source(file: Path, entry: dict, where: str) -> tuple[Path | None, str | None]:
    """(path, None) or (None, hub id): exactly one of path and hub."""
    if ("path" in entry) == ("hub" in entry):
        raise ModelConfigError(
            f'{file}: {where} needs path = "FILE or FOLDER" or hub = "OWNER/NAME" (one of them)'
        )
    if "hub" in entry:
        hub = _string(file, f"{where} hub", entry["hub"])
        if not _HUB_ID.fullmatch(hub):
            raise ModelConfigError(f"{file}: {where} hub must be OWNER/NAME (got {hub!r})")
        return None, hub
    return _local(file, entry, "path", where), None


def _local(file: Path, entry: dict, key: str, where: str) -> Path:
    """An existing local path, relative to the TOML file. Never a hub lookup: a missing
    path is an error at once."""
    value = _string(file, f"{where} {key}", entry[key])
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = file.parent / path
    if not path.exists():
        hint = ""
        if key == "path" and _HUB_ID.fullmatch(value) and not Path(value).suffix:
            hint = f'; for a hub id write hub = "{value}"'
        raise ModelConfigError(f"{file}: {where} {key}: no such file or folder {path}{hint}")
    return path


def _add(catalog: Catalog, table: str, entry) -> None:
    getattr(catalog, table)[entry.name] = entry


# -- entries, checked ----------------------------------------------------------------------


def _base_entry(
    name: str,
    path: Path | None,
    hub: str | None,
    config: Path | None,
    vae: Path | None,
    where: str,
) -> BaseEntry:
    if path is not None and path.is_file():
        checkpoints.check(path, "base", where)
        config = config or SD15_CONFIGS
        configs = config
    elif path is not None:
        _check_diffusers_folder(path, "unet/config.json", where)
        configs = path
    else:
        configs = None
    family, size = _shape(configs, hub, where)
    if vae is not None:
        if vae.is_file():
            checkpoints.check(vae, "vae", f"{where} vae")
        else:
            _check_diffusers_folder(vae, "config.json", f"{where} vae")
    return BaseEntry(name, path, hub, config or SD15_CONFIGS, vae, family, size)


def _control_entry(
    name: str,
    path: Path | None,
    hub: str | None,
    kind: str | None,
    config: Path | None,
    where: str,
) -> ControlEntry:
    if path is not None and path.is_file():
        checkpoints.check(path, "controlnet", where)
        config = config or SD15_CONFIGS / "controlnet"
        _read_json(config / "config.json", where)
    elif path is not None:
        _check_diffusers_folder(path, "config.json", where)
    if kind is None:
        kind = control_kind(path.stem if path is not None else hub.split("/")[-1])
        if kind is None:
            raise ModelConfigError(
                f"{path or hub}: its name does not tell what map it expects; name it in a "
                f'[controls.NAME] table with kind = "{CONTROL_KINDS[0]}" (or '
                f"{', '.join(CONTROL_KINDS[1:])})"
            )
    return ControlEntry(name, kind, path, hub, config or SD15_CONFIGS / "controlnet")


def _check_diffusers_folder(folder: Path, marker: str, where: str) -> None:
    """A diffusers folder: its `marker` config, and safetensors weights rather than only
    pickles (diffusers would fail too, but with a message about a missing file)."""
    if not (folder / marker).is_file():
        raise ModelConfigError(
            f"{folder}: not a diffusers folder ({marker} missing) as {where} needs; give a "
            ".safetensors file or a folder saved with save_pretrained"
        )
    weights = [
        p for p in folder.rglob("*") if p.suffix in (".safetensors", *checkpoints.PICKLE_SUFFIXES)
    ]
    if weights and not any(p.suffix == ".safetensors" for p in weights):
        raise ModelConfigError(
            f"{folder}: only safetensors weights are loaded, found the pickle checkpoint "
            f"{weights[0].relative_to(folder)}; convert it to .safetensors (e.g. load it and "
            "save_pretrained with safe_serialization=True) — pickles can run code when loaded"
        )


def _shape(configs: Path | None, hub: str | None, where: str) -> tuple[str, int]:
    """(family, default size) from a model's UNet and VAE configs, without its weights."""

    def part(name: str) -> dict:
        if configs is not None:
            return _read_json(configs / name / "config.json", where)
        return _hub_json(hub, f"{name}/config.json", where)

    unet = part("unet")
    problem = None
    if unet.get("addition_embed_type") == "text_time":
        problem = "an SDXL model"
    elif unet.get("cross_attention_dim") == 1024:
        problem = "an SD 2.x model"
    elif unet.get("in_channels") != 4:
        problem = f"a model with a {unet.get('in_channels')}-channel UNet (SD 1.5's has 4)"
    if problem:
        raise ModelConfigError(
            f"{configs or hub}: {problem}, not an SD 1.5 model as {where} needs; Tether runs "
            "SD 1.5-family models"
        )
    scale = 2 ** (len(part("vae")["block_out_channels"]) - 1)
    return "sd15", unet["sample_size"] * scale


def _read_json(path: Path, where: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ModelConfigError(f"{path}: cannot read the config {where} needs ({error})") from error


def _hub_json(hub: str, filename: str, where: str) -> dict:
    # Imported here: only hub ids need it (the download, or the local cache offline).
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return _read_json(Path(hf_hub_download(hub, filename)), where)
    except (OSError, HfHubHTTPError, LocalEntryNotFoundError) as error:
        raise ModelConfigError(
            f"{where}: cannot read {filename} of the hub model {hub} ({type(error).__name__}); "
            "check the id, or download it and give its folder as path"
        ) from error


# -- the models folder ---------------------------------------------------------------------


def _scan(root: Path, catalog: Catalog) -> None:
    if not root.is_dir():
        raise ModelConfigError(f"--models-dir {root}: no such folder")
    folders = [p for p in sorted(root.iterdir()) if p.is_dir() and p.name.lower() in _FOLDERS]
    if not folders:
        raise ModelConfigError(
            f"--models-dir {root}: holds none of ComfyUI's checkpoints/, controlnet/, loras/, "
            "embeddings/ nor A1111's Stable-diffusion/, ControlNet/, Lora/, embeddings/; give "
            "the folder that holds them (ComfyUI/models, stable-diffusion-webui/models)"
        )
    named = {entry.path for table in _TABLE_KEYS for entry in getattr(catalog, table).values()}
    for folder in folders:
        kind = _FOLDERS[folder.name.lower()]
        for item in _items(folder):
            if item in named:
                continue  # the TOML names it (and may set its kind or VAE)
            try:
                entry = _folder_entry(item, kind)
            except ModelConfigError as error:
                catalog.left_out.append(str(error))
                continue
            table = {"base": "models", "controlnet": "controls", "lora": "loras"}.get(
                kind, "embeddings"
            )
            taken = getattr(catalog, table).get(entry.name)
            if taken is not None:
                catalog.left_out.append(
                    f"{item}: its name {entry.name!r} is taken by {taken.path or taken.hub}; "
                    "name it in the TOML to serve it too"
                )
                continue
            _add(catalog, table, entry)


def _items(folder: Path) -> list[Path]:
    """Model files and diffusers folders under `folder`, in name order, hidden ones left out."""
    items = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir():
            is_model = (path / "unet").is_dir() or (path / "config.json").is_file()
            items += [path] if is_model else _items(path)
        elif path.suffix.lower() in (".safetensors", *checkpoints.PICKLE_SUFFIXES):
            items.append(path)
    return items


def _folder_entry(path: Path, kind: str):
    name = path.stem if path.is_file() else path.name
    where = f"{path.parent.name}/"
    if kind == "base":
        return _base_entry(name, path, None, None, None, where)
    if kind == "controlnet":
        return _control_entry(name, path, None, None, None, where)
    checkpoints.check(path, kind, where)
    return LoraFile(name, path) if kind == "lora" else EmbeddingFile(name, path)
