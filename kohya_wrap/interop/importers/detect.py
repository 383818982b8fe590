"""Which tool wrote a settings file (read from its content, not its name), and which family a model file is."""

from __future__ import annotations

import json
import re
import struct
import tomllib
from pathlib import Path
from typing import Any, Literal

from kohya_wrap.config.presets import read_settings_text
from kohya_wrap.errors import ConfigError

Format = Literal["kohya_ss", "sd_scripts_toml", "sd_scripts_command", "civitai"]
CIVITAI_PARAMS = frozenset(
    {"unetLR", "textEncoderLR", "networkDim", "networkAlpha", "maxTrainEpochs", "numRepeats", "optimizerType"}
)
KOHYA_SS_KEYS = frozenset(
    {"LoRA_type", "max_resolution", "train_data_dir", "optimizer", "epoch", "lr_warmup", "sdxl", "xformers"}
)
TRAINING_KEYS = frozenset(
    {
        "pretrained_model_name_or_path",
        "network_module",
        "network_dim",
        "optimizer_type",
        "output_name",
        "max_train_epochs",
    }
)
_SCRIPT = re.compile(r"(?:^|[\s/\\\"'])(?:sdxl_|flux_)?train_network\.py\b")


def detect(path: Path) -> tuple[Format, Any]:
    """The format of `path` and its parsed content (JSON/TOML document, or the text of a command line)."""
    text = read_settings_text(path, "import")
    doc = _json(text)
    if isinstance(doc, dict):
        params: dict[str, Any] = doc["params"] if isinstance(doc.get("params"), dict) else doc
        if CIVITAI_PARAMS & set(params):
            return "civitai", doc
        if KOHYA_SS_KEYS & set(doc) or "pretrained_model_name_or_path" in doc:
            return "kohya_ss", doc
        raise ConfigError(f"import: {path.name} is JSON but neither a kohya_ss GUI config nor Civitai trainer settings")
    toml = _toml(text)
    if toml is not None:
        if "model" in toml and isinstance(toml["model"], dict) and "family" in toml["model"]:
            raise ConfigError(f"import: {path.name} is already a kohya_wrap config; use it as it is")
        flat = {k: v for key, value in toml.items() for k, v in (value.items() if isinstance(value, dict) else [])}
        flat |= {k: v for k, v in toml.items() if not isinstance(v, dict)}
        if TRAINING_KEYS & set(flat):
            return "sd_scripts_toml", toml
        if "datasets" in toml or "general" in toml:
            raise ConfigError(
                f"import: {path.name} is an sd-scripts dataset config; import the training config "
                "(--config_file) or the command line that names it"
            )
    if _SCRIPT.search(text):
        return "sd_scripts_command", text
    raise ConfigError(
        f"import: cannot tell what wrote {path.name}; kohya-wrap imports kohya_ss GUI configs (.json), "
        "sd-scripts training TOMLs and command lines, and Civitai trainer settings (.json)"
    )


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _toml(text: str) -> dict[str, Any] | None:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return None


def family_of_model(path: Path) -> str | None:
    """sd15, sdxl or flux from a local model (diffusers folder or single file); None when it cannot tell."""
    if path.is_dir():
        index = path / "model_index.json"
        try:
            name = json.loads(index.read_text("utf-8")).get("_class_name", "")
        except (OSError, ValueError):
            return None
        return {"StableDiffusionXLPipeline": "sdxl", "FluxPipeline": "flux"}.get(
            name, "sd15" if name == "StableDiffusionPipeline" and not _is_sd2(path) else None
        )
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    keys = _safetensors_keys(path)
    if any(k.startswith("conditioner.embedders.1.") for k in keys):
        return "sdxl"
    if any(k.startswith(("double_blocks.", "model.diffusion_model.double_blocks.")) for k in keys):
        return "flux"
    if any(k.startswith("cond_stage_model.transformer.") for k in keys):
        return "sd15"
    return None


def _is_sd2(folder: Path) -> bool:
    try:
        config = json.loads((folder / "unet" / "config.json").read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return bool(config.get("cross_attention_dim") == 1024)


def _safetensors_keys(path: Path) -> list[str]:
    with path.open("rb") as handle:
        raw = handle.read(8)
        if len(raw) != 8:
            return []
        (length,) = struct.unpack("<Q", raw)
        if length > 100 * 2**20:
            return []
        try:
            header = json.loads(handle.read(length))
        except ValueError:
            return []
    return [k for k in header if k != "__metadata__"] if isinstance(header, dict) else []
