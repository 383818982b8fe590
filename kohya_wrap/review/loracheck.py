"""Will a LoRA load elsewhere? ComfyUI's key naming, diffusers' kohya converter, the base model's modules."""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# ComfyUI (comfy/lora.py) maps kohya names `lora_unet_<model key, "." → "_">` onto the diffusion model and
# `lora_te*_text_model_encoder_layers_<n>_<part>` onto these parts of each CLIP text encoder layer.
CLIP_PARTS = ("mlp_fc1", "mlp_fc2", "self_attn_k_proj", "self_attn_q_proj", "self_attn_v_proj", "self_attn_out_proj")
PREFIXES = {
    "sd15": {"lora_unet_": "unet", "lora_te_": "text_encoder"},
    "sdxl": {"lora_unet_": "unet", "lora_te1_": "text_encoder", "lora_te2_": "text_encoder_2"},
    "flux": {"lora_unet_": "unet", "lora_te1_": "text_encoder"},
}
PARTS = ("lora_up.weight", "lora_down.weight", "alpha")
_TE_NAME = re.compile(r"^text_model_encoder_layers_(\d+)_(" + "|".join(CLIP_PARTS) + r")$")
# Where a diffusers folder keeps each model's weights, and the prefix of the same weights in a single file.
FOLDERS = {"unet": ("unet", "transformer"), "text_encoder": ("text_encoder",), "text_encoder_2": ("text_encoder_2",)}
SINGLE_FILE = {
    "sd15": {"text_encoder": "cond_stage_model.transformer."},
    "sdxl": {"text_encoder": "conditioner.embedders.0.transformer."},
    "flux": {"unet": ""},
}
MAX_HEADER = 100 * 2**20


@dataclass(frozen=True)
class LoraCheck:
    """What the checks found for one LoRA file: problems (it will not load fully) and what was not checked."""

    path: Path
    modules: int
    problems: tuple[str, ...]
    notes: tuple[str, ...]
    checked: tuple[str, ...]  # the checks that ran, in words


def header(path: Path) -> dict[str, Any]:
    """A safetensors file's header: tensor name → {dtype, shape, data_offsets} (no tensor is read)."""
    with path.open("rb") as handle:
        raw = handle.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: too short to be a safetensors file")
        (length,) = struct.unpack("<Q", raw)
        if length > MAX_HEADER:
            raise ValueError(f"{path}: not a safetensors file")
        doc = json.loads(handle.read(length))
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a safetensors file")
    doc.pop("__metadata__", None)
    return doc


def lora_modules(keys: dict[str, Any], family: str) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Group `<prefix><module>.<part>` keys by module; keys that are not of that form are problems."""
    modules: dict[str, dict[str, Any]] = {}
    problems = []
    prefixes = PREFIXES[family]
    unknown: dict[str, list[str]] = {}
    for key, info in keys.items():
        module, _, part = key.partition(".")
        if part not in PARTS or not module.startswith(tuple(prefixes)):
            # A kohya-shaped key under a wrong prefix is named once per module, any other key whole.
            unknown.setdefault(module if part in PARTS else key, []).append(part if part in PARTS else "")
            continue
        modules.setdefault(module, {})[part] = info
    for module, bad in sorted(unknown.items()):
        listed = f" ({', '.join(bad)})" if all(bad) else ""
        problems.append(
            f"{module}{listed}: not a kohya {family} LoRA key ({'/'.join(prefixes)}<module>.lora_up/"
            ".lora_down/.alpha); ComfyUI would log 'lora key not loaded'"
        )
    for module, parts in sorted(modules.items()):
        missing = [p for p in PARTS if p not in parts]
        if missing:
            problems.append(f"{module}: has no {', '.join(missing)}")
            continue
        up, down = parts["lora_up.weight"]["shape"], parts["lora_down.weight"]["shape"]
        if len(up) < 2 or len(down) < 2 or up[1] != down[0]:
            problems.append(f"{module}: lora_up {up} and lora_down {down} do not share a rank")
    return modules, problems


def base_weights(base: Path, family: str) -> tuple[dict[str, dict[str, list[int]]], list[str]]:
    """model part → weight name (without `.weight`) → shape, from a diffusers folder or a single file."""
    parts: dict[str, dict[str, list[int]]] = {}
    notes = []
    if base.is_dir():
        for part, folders in FOLDERS.items():
            for folder in folders:
                files = sorted((base / folder).glob("*.safetensors")) if (base / folder).is_dir() else []
                if files:
                    shapes = parts.setdefault(part, {})
                    for file in files:
                        shapes |= {
                            k[: -len(".weight")]: v["shape"] for k, v in header(file).items() if k.endswith(".weight")
                        }
                    break
        if family == "flux" and "unet" in parts:
            # sd-scripts names Flux modules as BFL's checkpoint does, not as diffusers' transformer.
            del parts["unet"]
            notes.append("the Flux DiT's module names were not checked: the base is a diffusers folder")
    elif base.suffix == ".safetensors" and base.is_file():
        keys = header(base)
        for part, prefix in SINGLE_FILE.get(family, {}).items():
            found = {
                k[len(prefix) : -len(".weight")]: v["shape"]
                for k, v in keys.items()
                if k.startswith(prefix) and k.endswith(".weight")
            }
            if family == "flux":
                found = {k.removeprefix("model.diffusion_model."): v for k, v in found.items()}
            if found:
                parts[part] = found
        missing = [p for p in PREFIXES[family].values() if p not in parts]
        if missing:
            notes.append(f"module names of {', '.join(missing)} were not checked: the base is a single-file checkpoint")
    else:
        notes.append(f"the base model {base} is not here (a hub id or a moved file): module names were not checked")
    return parts, notes


# sd-scripts names SDXL's U-Net modules as the original (SGM) checkpoint does; ComfyUI maps those names and
# diffusers' alike. Two layers per level on the way down (then a downsampler), three on the way up.
_RESNET_PARTS = {
    "in_layers_0": "norm1",
    "in_layers_2": "conv1",
    "emb_layers_1": "time_emb_proj",
    "out_layers_0": "norm2",
    "out_layers_3": "conv2",
    "skip_connection": "conv_shortcut",
}


def diffusers_name(name: str) -> str:
    """An SGM U-Net module name (underscored, as in LoRA keys) as diffusers names it; others unchanged."""
    middle = re.match(r"^middle_block_(\d)_(.+)$", name)
    if middle:
        index, rest = int(middle[1]), middle[2]
        if index == 1:
            return f"mid_block_attentions_0_{rest}"
        return f"mid_block_resnets_{index // 2}_{_RESNET_PARTS.get(rest, rest)}"
    match = re.match(r"^(input|output)_blocks_(\d+)_(\d)_(.+)$", name)
    if match is None:
        return name
    side, block, layer, rest = match[1], int(match[2]), int(match[3]), match[4]
    if side == "input":
        level, index = (block - 1) // 3, (block - 1) % 3
        if index == 2:
            return f"down_blocks_{level}_downsamplers_0_conv" if rest == "op" else name
        where = f"down_blocks_{level}"
    else:
        level, index = block // 3, block % 3
        if rest == "conv" and layer > 0:
            return f"up_blocks_{level}_upsamplers_0_conv"
        where = f"up_blocks_{level}"
    if layer == 0:
        return f"{where}_resnets_{index}_{_RESNET_PARTS.get(rest, rest)}"
    return f"{where}_attentions_{index}_{rest}"


def check_modules(
    modules: dict[str, dict[str, Any]], family: str, weights: dict[str, dict[str, list[int]]]
) -> list[str]:
    """Each LoRA module names a layer of the base model (ComfyUI's mapping) whose shape its weights fit."""
    problems = []
    by_lora_name = {part: {name.replace(".", "_"): name for name in names} for part, names in weights.items()}
    for module, parts in sorted(modules.items()):
        prefix = next(p for p in PREFIXES[family] if module.startswith(p))
        part = PREFIXES[family][prefix]
        rest = module[len(prefix) :]
        if part != "unet" and not _TE_NAME.match(rest):
            problems.append(f"{module}: ComfyUI maps only the attention and MLP layers of a text encoder")
            continue
        names = by_lora_name.get(part)
        if names is None:
            continue
        name = names.get(rest) or (names.get(diffusers_name(rest)) if part == "unet" else None)
        if name is None:
            problems.append(f"{module}: the base model has no such layer; ComfyUI would log 'lora key not loaded'")
            continue
        shape = weights[part][name]
        up, down = parts["lora_up.weight"]["shape"], parts["lora_down.weight"]["shape"]
        if up[0] != shape[0] or (len(shape) > 1 and down[1] != shape[1]):
            problems.append(f"{module}: LoRA {down[1]}→{up[0]} does not fit the layer {name} {shape}")
    return problems


def diffusers_problems(path: Path, family: str) -> list[str] | None:
    """Run diffusers' own kohya converter over every key; None when diffusers is not installed."""
    try:
        import diffusers
    except ImportError:
        return None
    from safetensors.torch import load_file

    pipelines = {"sd15": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline", "flux": "FluxPipeline"}

    pipeline = getattr(diffusers, pipelines[family])
    state = load_file(str(path))
    modules = {key.partition(".")[0] for key in state}
    try:
        converted = pipeline.lora_state_dict(dict(state))
    except Exception as exc:  # diffusers raises ValueError for keys it cannot map, others for odd tensors
        return [f"diffusers' kohya converter refused it: {type(exc).__name__}: {exc}"]
    weights = converted[0] if isinstance(converted, tuple) else converted
    ends = (".down.weight", ".up.weight", ".lora_A.weight", ".lora_B.weight")
    lora_weights = [k for k in weights if k.endswith(ends)]
    if len(lora_weights) != 2 * len(modules):
        return [f"diffusers converted {len(lora_weights)} weights of {2 * len(modules)} (2 per module)"]
    return []


def check_lora(path: Path, family: str, base: Path | None, use_diffusers: bool = True) -> LoraCheck:
    """Every check that needs no GPU and no model weights: key names, the base's layers, diffusers' converter
    (unless `use_diffusers` is off: importing diffusers takes many seconds)."""
    try:
        keys = header(path)
    except (OSError, ValueError) as exc:
        return LoraCheck(path, 0, (str(exc),), (), ())
    modules, problems = lora_modules(keys, family)
    checked = ["key names follow ComfyUI's kohya mapping"]
    notes: list[str] = []
    if base is not None:
        weights, base_notes = base_weights(base, family)
        notes += base_notes
        if weights:
            problems += check_modules(modules, family, weights)
            checked.append("every module is a layer of the base model, with fitting shapes")
    if use_diffusers:
        converted = diffusers_problems(path, family)
        if converted is None:
            notes.append("diffusers is not installed, so its converter was not run (pip install diffusers)")
        else:
            problems += converted
            checked.append("diffusers' kohya converter takes every key")
    return LoraCheck(path, len(modules), tuple(problems), tuple(notes), tuple(checked))
