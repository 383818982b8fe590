"""sd-scripts' own settings: a training TOML (+ its dataset TOML and prompts file) or a saved command line."""

from __future__ import annotations

import ast
import json
import re
import shlex
import tomllib
import typing
from collections.abc import Callable, Mapping
from pathlib import Path, PurePath, PureWindowsPath
from typing import Any

from kohya_wrap.config.models import Optimizer, Sampler, Scheduler
from kohya_wrap.errors import ConfigError
from kohya_wrap.interop.importers.draft import Draft, Imported, KeyFate, is_secret
from kohya_wrap.train import sd_args

FAMILY_BY_SCRIPT = {"train_network.py": "sd15", "sdxl_train_network.py": "sdxl", "flux_train_network.py": "flux"}
NETWORK_MODULES = {"networks.lora": ("sd15", "sdxl"), "networks.lora_flux": ("flux",)}
# sd-scripts option → our setting, copied as is (types are checked when the result is validated).
DIRECT = {
    "pretrained_model_name_or_path": "model.base",
    "vae": "model.vae",
    "tokenizer_cache_dir": "model.tokenizer_cache_dir",
    "v_parameterization": "model.v_prediction",
    "network_dim": "network.dim",
    "network_train_unet_only": "network.train_unet_only",
    "network_train_text_encoder_only": "network.train_text_encoder_only",
    "learning_rate": "optimizer.learning_rate",
    "unet_lr": "optimizer.unet_lr",
    "min_snr_gamma": "optimizer.min_snr_gamma",
    "max_train_epochs": "training.epochs",
    "train_batch_size": "training.batch_size",
    "mixed_precision": "training.mixed_precision",
    "seed": "training.seed",
    "clip_skip": "training.clip_skip",
    "weighted_captions": "training.weighted_captions",
    "max_token_length": "training.max_token_length",
    "noise_offset": "training.noise_offset",
    "multires_noise_iterations": "training.multires_noise_iterations",
    "multires_noise_discount": "training.multires_noise_discount",
    "gradient_checkpointing": "training.gradient_checkpointing",
    "cache_latents": "training.cache_latents",
    "cache_text_encoder_outputs": "training.cache_text_encoder_outputs",
    "fp8_base": "training.fp8_base",
    "shuffle_caption": "training.shuffle_tags",
    "keep_tokens": "training.keep_tokens",
    "caption_extension": "dataset.caption_extension",
    "enable_bucket": "dataset.enable_bucket",
    "min_bucket_reso": "dataset.min_bucket_reso",
    "max_bucket_reso": "dataset.max_bucket_reso",
    "output_name": "save.output_name",
    "save_every_n_epochs": "save.every_n_epochs",
    "save_state": "save.save_state",
    "sample_every_n_epochs": "sampling.every_n_epochs",
    "sample_sampler": "sampling.sampler",
    "metadata_trigger_phrase": "tagging.trigger_word",
    "validation_split": "validation.split",
    "validation_seed": "validation.seed",
    "validate_every_n_epochs": "validation.every_n_epochs",
    "max_validation_steps": "validation.max_batches",
}
FLOAT_TARGETS = {"optimizer.learning_rate", "optimizer.unet_lr", "optimizer.min_snr_gamma", "training.noise_offset",
                 "training.multires_noise_discount", "network.alpha", "flux.guidance_scale",
                 "flux.discrete_flow_shift"}  # fmt: skip
FLUX_ONLY = {
    "clip_l": "model.clip_l",
    "t5xxl": "model.t5xxl",
    "ae": "model.ae",
    "guidance_scale": "flux.guidance_scale",
    "timestep_sampling": "flux.timestep_sampling",
    "model_prediction_type": "flux.model_prediction_type",
    "discrete_flow_shift": "flux.discrete_flow_shift",
    "apply_t5_attn_mask": "flux.apply_t5_attn_mask",
    "blocks_to_swap": "flux.blocks_to_swap",
}
# What kohya_wrap decides itself: these change where files go or how they are logged, not the LoRA.
OURS = {
    "output_dir": "kohya_wrap writes into the run folder",
    "logging_dir": "kohya_wrap logs into the run folder",
    "log_with": "kohya_wrap logs to TensorBoard in the run folder",
    "log_prefix": "kohya_wrap names the logs after the run",
    "console_log_simple": "kohya_wrap sets it to read the progress",
    "console_log_level": "kohya_wrap reads sd-scripts' normal output",
    "max_data_loader_n_workers": "kohya_wrap chooses the data loader workers",
    "persistent_data_loader_workers": "kohya_wrap chooses the data loader workers",
    "training_comment": "kohya_wrap writes its own (the config hash)",
    "metadata_title": "kohya_wrap writes the output name",
    "config_file": "read above",
    "output_config": "kohya_wrap keeps the resolved config in the run folder",
}
# Absent from an sd-scripts file, these take sd-scripts' default, which is not ours.
SD_DEFAULTS = {
    "shuffle_caption": False,
    "keep_tokens": 0,
    "cache_latents": False,
    "gradient_checkpointing": False,
    "caption_extension": ".caption",
    "enable_bucket": False,
    "mixed_precision": "no",
    "save_state": False,
    "optimizer_type": "AdamW",
    "lr_scheduler": "constant",
    "learning_rate": 2e-6,
    "network_alpha": 1.0,
    "network_dim": 4,
    "train_batch_size": 1,
}
SD_FLUX_DEFAULTS = {"guidance_scale": 3.5, "timestep_sampling": "sigma", "model_prediction_type": "sigma_scaled"}
NETWORK_ARGS = {
    "conv_dim": ("network.conv_dim", int),
    "conv_alpha": ("network.conv_alpha", float),
    "block_dims": ("network.block_dims", int),
    "block_alphas": ("network.block_alphas", float),
}
LR_WEIGHTS = {"down_lr_weight": "down", "mid_lr_weight": "mid", "up_lr_weight": "up"}
WEIGHT_PRESETS = ("cosine", "sine", "linear", "reverse_linear", "zeros")
# kohya_wrap's render adds these for Adafactor when the config sets none of them.
ADAFACTOR_DEFAULTS = {"relative_step": False, "scale_parameter": False, "warmup_init": False}
PROMPT_KEYS = {"prompt": "text", "negative_prompt": "negative", "width": "width", "height": "height",
               "sample_steps": "steps", "seed": "seed"}  # fmt: skip

Namer = Callable[[str], str]


def canonical(choices: tuple[str, ...], value: object) -> str | None:
    """`value` as spelled in `choices`, matched case-insensitively (sd-scripts reads optimizers that way)."""
    if not isinstance(value, str):
        return None
    return next((c for c in choices if c.lower() == value.lower()), None)


def is_unset(value: object) -> bool:
    return value is None or value == "" or value == []


def parse_resolution(value: object) -> tuple[int, int] | None:
    """sd-scripts' `512`, `"512"`, `"512,768"` or `[512, 768]` as (width, height)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value, value
    parts: list[Any] = value if isinstance(value, list) else str(value).replace(" ", "").split(",")
    try:
        numbers = [int(p) for p in parts]
    except (TypeError, ValueError):
        return None
    if len(numbers) == 1:
        return numbers[0], numbers[0]
    return (numbers[0], numbers[1]) if len(numbers) == 2 else None


def parse_arg_list(items: list[str], key: str, draft: Draft) -> dict[str, Any]:
    """`["a=1", "b=0.9,0.99"]` read the way sd-scripts does (ast.literal_eval of each value)."""
    parsed: dict[str, Any] = {}
    for item in items:
        name, sep, raw = str(item).partition("=")
        if not sep or not name.strip():
            draft.drop(f"{key}: {item}", "not a key=value argument")
            continue
        try:
            parsed[name.strip()] = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            parsed[name.strip()] = raw.strip()
    return parsed


def apply_args(draft: Draft, args: Mapping[str, Any], family: str, name: Namer, base: Path, fill: bool) -> None:
    """Map a flat sd-scripts namespace onto our settings; `fill` adds sd-scripts' defaults for absent keys."""
    args = dict(args)
    if fill:
        for key, value in SD_DEFAULTS.items():
            if key not in args:
                _default(draft, key, value)
        if family == "flux":
            for key, value in SD_FLUX_DEFAULTS.items():
                if key not in args:
                    draft.set_value(FLUX_ONLY[key], value, f"sd-scripts' default ({key} not in the file)")
        if family == "sd15" and "clip_skip" not in args:
            draft.set_value("training.clip_skip", 1, "sd-scripts' default (no clip_skip: the last layer)")
        if family != "flux" and "xformers" not in args and "sdpa" not in args:
            draft.set_value("training.attention", "none", "sd-scripts' default (neither sdpa nor xformers)")
    total_steps = _number(args.get("max_train_steps"))
    scheduler = canonical(typing.get_args(Scheduler), args.get("lr_scheduler", SD_DEFAULTS["lr_scheduler"]))
    # The dataset TOML and the prompts file come last: their values win over the training arguments.
    last = ("dataset_config", "sample_prompts")
    for key, value in sorted(args.items(), key=lambda item: item[0] in last):
        shown = name(key)
        if is_secret(key):
            if is_unset(value):
                draft.mark(shown, "unset", "empty")
            else:
                draft.secret(shown)
            continue
        _apply_one(draft, key, value, shown, family, args, total_steps, scheduler, base)


def _default(draft: Draft, key: str, value: Any) -> None:
    target = {"optimizer_type": "optimizer.type", "lr_scheduler": "optimizer.scheduler"}.get(key)
    target = target or ("network.alpha" if key == "network_alpha" else DIRECT[key])
    draft.set_value(target, value, f"sd-scripts' default ({key} not in the file)")


def _as_target(target: str, value: Any) -> Any:
    """Our float settings are strict: an sd-scripts `8` for an alpha becomes `8.0`."""
    return float(value) if target in FLOAT_TARGETS and _number(value) is not None else value


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _apply_one(
    draft: Draft,
    key: str,
    value: Any,
    shown: str,
    family: str,
    args: Mapping[str, Any],
    total_steps: float | None,
    scheduler: str | None,
    base: Path,
) -> None:
    if key in DIRECT:
        target = DIRECT[key]
        if value is None:
            draft.mark(shown, "unset", "None")
            return
        if key == "caption_extension" and isinstance(value, str):
            value = value if value.startswith(".") else "." + value
        if key == "sample_sampler":
            value = canonical(typing.get_args(Sampler), value) or value
        if key == "save_every_n_epochs" and value == 0:
            draft.mark(shown, "unset", "0")
            return
        draft.put(target, _as_target(target, value), shown)
    elif key in FLUX_ONLY:
        if family == "flux" and value is None:
            draft.mark(shown, "unset", "empty")
        elif family == "flux":
            draft.put(FLUX_ONLY[key], _as_target(FLUX_ONLY[key], value), shown)
        else:
            draft.mark(shown, "ignored", f"only Flux uses it; this is a {family} config")
    elif key in OURS:
        draft.mark(shown, "ignored", OURS[key])
    elif key == "network_alpha":
        if _number(value) is None:
            draft.mark(shown, "unset", "empty")
        else:
            draft.put("network.alpha", float(value), shown)
    elif key == "network_module":
        if family in NETWORK_MODULES.get(str(value), ()):
            draft.mark(shown, "same", f"kohya_wrap trains {value} for {family}")
        else:
            draft.drop(shown, f"{value} is not supported; kohya_wrap trains LoRA (networks.lora, networks.lora_flux)")
    elif key == "network_args":
        _network_args(draft, value if isinstance(value, list) else str(value).split(), shown)
    elif key == "optimizer_type":
        chosen = canonical(typing.get_args(Optimizer), value or "AdamW")
        if chosen is None:
            draft.drop(shown, f"optimizer {value!r} is not one of {', '.join(typing.get_args(Optimizer))}")
        else:
            draft.put("optimizer.type", chosen, shown)
    elif key == "optimizer_args":
        parsed = parse_arg_list(value if isinstance(value, list) else str(value).split(), shown, draft)
        optimizer = canonical(typing.get_args(Optimizer), args.get("optimizer_type"))
        if optimizer == "Adafactor" and all(parsed.get(k, _NONE) == v for k, v in ADAFACTOR_DEFAULTS.items()):
            parsed = {k: v for k, v in parsed.items() if k not in ADAFACTOR_DEFAULTS}
        for arg, arg_value in parsed.items():
            if isinstance(arg_value, tuple):
                arg_value = [float(v) for v in arg_value]
            draft.put(f"optimizer.args.{arg}", arg_value, f"{shown}: {arg}")
        if not parsed:
            draft.mark(shown, "same", "kohya_wrap's own Adafactor arguments")
    elif key == "text_encoder_lr":
        values = value if isinstance(value, list) else [value]
        if not values or values[0] is None:
            draft.mark(shown, "unset", "None")
        elif len(set(values)) == 1:
            draft.put("optimizer.text_encoder_lr", float(values[0]), shown)
        else:
            draft.drop(shown, "different LRs per text encoder; kohya_wrap has one text_encoder_lr")
    elif key == "lr_scheduler":
        if scheduler is None:
            draft.drop(shown, f"scheduler {value!r} is not one of {', '.join(typing.get_args(Scheduler))}")
        else:
            draft.put("optimizer.scheduler", scheduler, shown)
    elif key == "lr_scheduler_num_cycles":
        if scheduler == "cosine_with_restarts" and value is not None:
            draft.put("optimizer.restarts", value, shown)
        else:
            draft.mark(shown, "ignored", "only cosine_with_restarts uses it")
    elif key == "lr_warmup_steps":
        _warmup(draft, value, shown, total_steps)
    elif key == "max_train_steps":
        if args.get("max_train_epochs") is not None:
            draft.mark(shown, "ignored", "sd-scripts uses max_train_epochs when both are set")
        elif is_unset(value):
            draft.mark(shown, "unset", "None")
        else:
            draft.drop(shown, "kohya_wrap trains by epochs; set training.epochs (`kohya-wrap estimate` counts steps)")
    elif key in ("xformers", "sdpa"):
        if family == "flux":
            draft.mark(shown, "ignored", "Flux training ignores the attention setting")
        elif value:
            draft.put("training.attention", key, shown)
        else:
            draft.mark(shown, "unset", "false")
    elif key == "save_precision":
        precision = {"float": "fp32", "fp16": "fp16", "bf16": "bf16"}.get(str(value))
        if precision is None:
            draft.mark(shown, "unset", "sd-scripts' default")
        else:
            draft.put("save.precision", precision, shown)
    elif key == "save_model_as":
        if value in (None, "safetensors"):
            draft.mark(shown, "same", "kohya_wrap saves .safetensors")
        else:
            draft.drop(shown, f"kohya_wrap saves .safetensors, not {value}")
    elif key == "zero_terminal_snr":
        if value and family == "sdxl" and args.get("v_parameterization"):
            draft.mark(shown, "same", "kohya_wrap sets it for v-prediction SDXL")
        elif value:
            draft.extra(key, value, shown)
        else:
            draft.mark(shown, "unset", "false")
    elif key == "resolution":
        _resolution(draft, value, shown)
    elif key in ("train_data_dir", "reg_data_dir"):
        if not is_unset(value):
            add_image_folders(draft, str(value), key == "reg_data_dir", shown, base)
        else:
            draft.mark(shown, "unset", "empty")
    elif key == "dataset_config":
        if is_unset(value):
            draft.mark(shown, "unset", "empty")
        else:
            read_dataset_toml(draft, resolve(str(value), base), shown)
    elif key == "sample_prompts":
        if is_unset(value):
            draft.mark(shown, "unset", "empty")
        else:
            read_prompt_file(draft, resolve(str(value), base), shown, family)
    elif key == "bucket_reso_steps":
        if value in (None, 64):
            draft.mark(shown, "same", "kohya_wrap buckets in steps of 64")
        else:
            draft.drop(shown, "kohya_wrap buckets in steps of 64")
    else:
        generic(draft, key, value, shown, family)


_NONE = object()


def generic(draft: Draft, key: str, value: Any, shown: str, family: str) -> None:
    """A key we have no setting for: unset when it holds sd-scripts' default, else run.extra_args."""
    spec = sd_args.load_spec()
    script = sd_args.SCRIPT_BY_FAMILY[family]
    option = spec.options(script).get(key)
    if option is not None:
        value = _as_option(option, value)
    off = is_unset(value) or value is False
    if option is None:
        others = [name for name in spec.scripts if name != script and key in spec.options(name)]
        if off or value == 0:
            draft.mark(shown, "unset", "empty")
        elif others:
            draft.mark(shown, "ignored", f"an option of {others[0]}, not of {script}")
        else:
            draft.drop(shown, f"not an option of sd-scripts' {script}")
    elif off or value == option.default:
        draft.mark(shown, "unset", "sd-scripts' default")
    else:
        draft.extra(key, _as_option(option, value), shown)


def _as_option(option: sd_args.ArgOption, value: Any) -> Any:
    """A value as the option's type: GUIs store `1.0` for ints, "False" for flags, lists as one string."""
    if option.action == "store_true" and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if option.is_list and isinstance(value, str):
        return value.split()
    if option.type == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    if option.type == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _network_args(draft: Draft, items: list[str], shown: str) -> None:
    parsed = {}
    for item in items:
        name, sep, raw = str(item).partition("=")
        if sep:
            parsed[name.strip()] = raw.strip().strip("\"'")
        else:
            draft.drop(f"{shown}: {item}", "not a key=value argument")
    network_args_into(draft, parsed, lambda name: f"{shown}: {name}")


def network_args_into(draft: Draft, parsed: Mapping[str, str], namer: Namer) -> None:
    """networks.lora's arguments (conv_dim, block_dims, …) onto the network settings."""
    for name, raw in parsed.items():
        where = namer(name)
        try:
            if name in NETWORK_ARGS:
                target, kind = NETWORK_ARGS[name]
                numbers = [int(float(v)) if kind is int else float(v) for v in raw.split(",")]
                draft.put(target, numbers if name.startswith("block_") else numbers[0], where)
            elif name in LR_WEIGHTS:
                part = LR_WEIGHTS[name]
                weights: Any = raw if raw in WEIGHT_PRESETS and part != "mid" else [float(v) for v in raw.split(",")]
                draft.put(f"network.block_lr_weights.{part}", weights, where)
            else:
                draft.drop(where, "a network argument kohya_wrap has no setting for")
        except ValueError:
            draft.drop(where, f"cannot read {raw!r} as numbers")


def _warmup(draft: Draft, value: Any, shown: str, total_steps: float | None) -> None:
    number = _number(value)
    if number is None or number == 0:
        draft.mark(shown, "unset", "0")
    elif isinstance(value, float) and number < 1:
        draft.put("optimizer.warmup_percent", round(number * 100, 6), shown, "a ratio of the steps")
    elif total_steps:
        percent = warmup_percent(int(number), int(total_steps))
        draft.put("optimizer.warmup_percent", percent, shown, f"{int(number)} of {int(total_steps)} steps")
    else:
        draft.drop(shown, "counts steps and the file gives no max_train_steps; set optimizer.warmup_percent")


def warmup_percent(steps: int, total: int) -> float:
    """The roundest percentage that kohya_wrap turns back into exactly `steps` of `total` steps."""
    exact = steps * 100 / total
    for digits in range(0, 7):
        candidate = round(exact, digits)
        if round(total * candidate / 100) == steps:
            return float(candidate)
    return exact


def _resolution(draft: Draft, value: Any, shown: str) -> None:
    size = parse_resolution(value)
    if size is None:
        draft.drop(shown, f"cannot read {value!r} as a resolution")
    elif size[0] != size[1]:
        draft.drop(shown, f"{size[0]}x{size[1]} is not square; kohya_wrap trains a square resolution (with buckets)")
    else:
        draft.put("dataset.resolution", size[0], shown)


def resolve(path: str, base: Path) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else base / candidate


def folder_name(path: str) -> str:
    windows = PureWindowsPath(path) if "\\" in path else PurePath(path)
    return windows.name


def add_image_folders(draft: Draft, parent: str, is_reg: bool, shown: str, base: Path) -> None:
    """kohya's `train_data_dir`: a folder of `<repeats>_<name>` image folders, each one of our dataset dirs."""
    folder = resolve(parent, base)
    dirs: list[dict[str, Any]] = draft.get("dataset.dirs") or []
    if not folder.is_dir():
        entry: dict[str, Any] = {"path": parent}
        if is_reg:
            entry["is_reg"] = True
        draft.put("dataset.dirs", [*dirs, entry], shown)
        draft.notes.append(
            f"dataset.dirs: {parent!r} is not a folder here; kohya reads the `<repeats>_<name>` folders inside it, "
            "so list each of them in dataset.dirs"
        )
        return
    found = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        head, sep, rest = sub.name.partition("_")
        if sep and head.isdigit() and rest.strip():
            entry = {"path": str(sub)}
            if is_reg:
                entry["is_reg"] = True
            found.append(entry)
        else:
            draft.notes.append(f"dataset.dirs: {sub} is skipped, as kohya does: its name has no `<repeats>_` prefix")
    if not found:
        draft.drop(shown, f"{folder} holds no `<repeats>_<name>` folders")
        return
    draft.put("dataset.dirs", [*dirs, *found], shown, f"{len(found)} folder(s)")


# ---- the dataset TOML --------------------------------------------------------------------------------

DATASET_LEVEL = {
    "resolution": None,
    "batch_size": "training.batch_size",
    "enable_bucket": "dataset.enable_bucket",
    "min_bucket_reso": "dataset.min_bucket_reso",
    "max_bucket_reso": "dataset.max_bucket_reso",
    "caption_extension": "dataset.caption_extension",
    "shuffle_caption": "training.shuffle_tags",
    "keep_tokens": "training.keep_tokens",
    "validation_split": "validation.split",
    "validation_seed": "validation.seed",
}
SUBSET_KEYS = {"image_dir", "num_repeats", "is_reg", "class_tokens"}


def read_toml_file(path: Path, what: str) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"import: {what} not found: {path}") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"import: cannot read {what} {path}: {exc}") from None


def read_dataset_toml(draft: Draft, path: Path, shown: str) -> None:
    """sd-scripts' dataset config: [general], the first [[datasets]] and its [[datasets.subsets]]."""
    if not path.is_file():
        draft.drop(shown, f"dataset config not found: {path}")
        return
    draft.mark(shown, "ignored", f"read below ({path.name})")
    doc = read_toml_file(path, "dataset config")
    prefix = f"{path.name}: "
    general = doc.get("general", {})
    datasets = doc.get("datasets", [])
    for key, value in general.items():
        _dataset_key(draft, key, value, f"{prefix}general.{key}")
    if not datasets:
        draft.drop(f"{prefix}datasets", "no [[datasets]]")
        return
    first = datasets[0]
    for key, value in first.items():
        if key != "subsets":
            _dataset_key(draft, key, value, f"{prefix}datasets[0].{key}")
    dirs: list[dict[str, Any]] = []
    for i, subset in enumerate(first.get("subsets", [])):
        where = f"{prefix}datasets[0].subsets[{i}]"
        if "image_dir" not in subset:
            draft.drop(where, "no image_dir (metadata-file datasets are not supported)")
            continue
        entry: dict[str, Any] = {"path": subset["image_dir"]}
        if "num_repeats" in subset:
            entry["repeats"] = subset["num_repeats"]
        if subset.get("is_reg"):
            entry["is_reg"] = True
        if subset.get("class_tokens"):
            entry["class_token"] = subset["class_tokens"]
        dirs.append(entry)
        for key in subset:
            if key not in SUBSET_KEYS:
                draft.drop(f"{where}.{key}", "kohya_wrap has no per-folder setting for it")
        draft.fates.append(KeyFate(where, "mapped", "dataset.dirs"))
    if dirs:
        draft.set_value("dataset.dirs", [*(draft.get("dataset.dirs") or []), *dirs], f"{path.name}: subsets")
    for i in range(1, len(datasets)):
        draft.drop(f"{prefix}datasets[{i}]", "kohya_wrap trains one dataset; add its folders to dataset.dirs")


def _dataset_key(draft: Draft, key: str, value: Any, shown: str) -> None:
    if key == "resolution":
        _resolution(draft, value, shown)
    elif key in DATASET_LEVEL:
        if key == "caption_extension" and isinstance(value, str) and not value.startswith("."):
            value = "." + value
        draft.put(str(DATASET_LEVEL[key]), value, shown)
    elif key == "bucket_reso_steps":
        if value == 64:
            draft.mark(shown, "same", "kohya_wrap buckets in steps of 64")
        else:
            draft.drop(shown, "kohya_wrap buckets in steps of 64")
    else:
        draft.drop(shown, "a dataset setting kohya_wrap has no setting for")


# ---- sample prompts ------------------------------------------------------------------------------------


def prompt_from_line(line: str) -> dict[str, Any]:
    """One prompt line in sd-scripts' syntax: `text --n negative --w 512 --h 768 --s 28 --l 7 --d 42`."""
    parts = line.split(" --")
    prompt: dict[str, Any] = {"prompt": parts[0]}
    patterns = (
        ("width", r"w (\d+)", int),
        ("height", r"h (\d+)", int),
        ("seed", r"d (\d+)", int),
        ("sample_steps", r"s (\d+)", int),
        ("scale", r"l ([\d.]+)", float),
        ("guidance_scale", r"g ([\d.]+)", float),
        ("negative_prompt", r"n (.+)", str),
    )
    for part in parts[1:]:
        for key, pattern, kind in patterns:
            match = re.match(pattern, part, re.IGNORECASE)
            if match:
                try:
                    prompt[key] = kind(match.group(1))
                except ValueError:
                    prompt.setdefault("unreadable", []).append(part)
                break
        else:
            prompt.setdefault("unreadable", []).append(part)
    return prompt


def prompts_from_text(text: str) -> list[dict[str, Any]]:
    """sd-scripts' .txt prompt file: one prompt a line; empty lines and lines starting with # skipped."""
    return [prompt_from_line(line.strip()) for line in text.splitlines() if line.strip() and line[0] != "#"]


def read_prompt_file(draft: Draft, path: Path, shown: str, family: str) -> None:
    if not path.is_file():
        draft.drop(shown, f"prompt file not found: {path}")
        return
    text = path.read_text("utf-8")
    raw: list[Any]
    if path.suffix == ".json":
        raw = json.loads(text)
    elif path.suffix == ".toml":
        doc = tomllib.loads(text)
        shared = {k: v for k, v in doc.get("prompt", {}).items() if k != "subset"}
        raw = [shared | subset for subset in doc.get("prompt", {}).get("subset", [])]
    else:
        raw = prompts_from_text(text)
    entries = [prompt_from_line(item) if isinstance(item, str) else item for item in raw]
    add_prompts(draft, entries, shown, family)


def add_prompts(draft: Draft, entries: list[dict[str, Any]], shown: str, family: str) -> None:
    """sd-scripts prompt dicts → sampling.prompts (the keys we cannot carry are named)."""
    prompts = []
    cfg_key = "guidance_scale" if family == "flux" else "scale"
    for i, entry in enumerate(entries):
        prompt: dict[str, Any] = {}
        for key, value in entry.items():
            if key in PROMPT_KEYS:
                if key == "negative_prompt" and not value:
                    continue
                prompt[PROMPT_KEYS[key]] = value
            elif key == cfg_key:
                prompt["cfg"] = float(value)
            elif key == "unreadable":
                for part in value:
                    draft.drop(f"{shown}[{i}]: --{part}", "not an option kohya_wrap reads in a prompt")
            else:
                draft.drop(f"{shown}[{i}].{key}", "a prompt option kohya_wrap has no setting for")
        if prompt.get("text"):
            prompts.append(prompt)
    draft.put("sampling.prompts", prompts, shown, f"{len(prompts)} prompt(s)")


# ---- the files ------------------------------------------------------------------------------------------


def read_training_toml(path: Path, family: str | None) -> Imported:
    """An sd-scripts training TOML (`--config_file`), with the dataset TOML and prompts it names."""
    doc = read_toml_file(path, "sd-scripts config")
    args = sd_args.flatten_training_toml(doc)
    chosen = family or family_of_args(args, path)
    draft = Draft("sd-scripts training TOML", path)
    draft.set_value("model.family", chosen, "--family" if family else family_reason(args))
    apply_args(draft, args, chosen, lambda k: k, path.parent, fill=True)
    return draft.finish(chosen)


def family_of_args(args: Mapping[str, Any], path: Path) -> str:
    from kohya_wrap.interop.importers.detect import family_of_model

    if args.get("network_module") == "networks.lora_flux" or any(args.get(k) for k in ("ae", "t5xxl")):
        return "flux"
    base = args.get("pretrained_model_name_or_path")
    found = family_of_model(resolve(str(base), path.parent)) if isinstance(base, str) and base else None
    if found is None:
        raise ConfigError(
            f"import: {path.name} does not say whether it trains SD1.5 or SDXL (its base model is not here to "
            "look at); pass --family sd15 or --family sdxl"
        )
    return found


def family_reason(args: Mapping[str, Any]) -> str:
    if args.get("network_module") == "networks.lora_flux" or any(args.get(k) for k in ("ae", "t5xxl")):
        return "networks.lora_flux / the Flux model files"
    return "read from the base model"


# ---- command lines ----------------------------------------------------------------------------------------

LAUNCH = {
    "num_cpu_threads_per_process": "run.cpu_threads_per_process",
    "num_processes": "run.num_processes",
    "num_machines": "run.num_machines",
    "machine_rank": "run.machine_rank",
    "main_process_ip": "run.main_process_ip",
    "main_process_port": "run.main_process_port",
}


def command_tokens(text: str) -> list[str]:
    """The words of a saved command line: shell (\\ continuations) or Windows batch (^ continuations)."""
    windows = bool(re.search(r"\^\s*$", text, re.MULTILINE)) or re.search(r"[A-Za-z]:\\", text) is not None
    if windows:
        joined = re.sub(r"\^[ \t]*\r?\n", " ", text)
        words = shlex.split(joined.replace("\r", ""), comments=False, posix=False)
        return [w[1:-1] if len(w) >= 2 and w[0] == w[-1] and w[0] in "\"'" else w for w in words]
    joined = re.sub(r"\\[ \t]*\r?\n", " ", text)
    lines = [line for line in joined.splitlines() if not line.lstrip().startswith("#")]
    return shlex.split("\n".join(lines), comments=True)


def read_command_line(path: Path, family: str | None) -> Imported:
    """`accelerate launch … train_network.py --flag value …` saved in a .sh, .bat or .txt file."""
    tokens = command_tokens(path.read_text("utf-8"))
    index = next((i for i, t in enumerate(tokens) if PurePath(t.replace("\\", "/")).name.endswith(".py")), None)
    if index is None:
        raise ConfigError(f"import: {path.name} holds no sd-scripts training command (no *.py script)")
    script = PurePath(tokens[index].replace("\\", "/")).name
    if script not in FAMILY_BY_SCRIPT:
        raise ConfigError(
            f"import: {script} is not a LoRA training script; kohya_wrap imports train_network.py, "
            "sdxl_train_network.py and flux_train_network.py commands"
        )
    chosen = family or FAMILY_BY_SCRIPT[script]
    draft = Draft("sd-scripts command line", path)
    draft.set_value("model.family", chosen, script)
    options = sd_args.load_spec().options(sd_args.SCRIPT_BY_FAMILY[chosen])
    launch = parse_options(tokens[:index], {})
    args = parse_options(tokens[index + 1 :], options)
    for key, value in launch.items():
        if key in LAUNCH:
            draft.put(LAUNCH[key], _launch_value(value), f"accelerate --{key}")
        elif key == "gpu_ids" and isinstance(value, str):
            ids = [int(v) for v in value.split(",") if v.strip().isdigit()]
            draft.put("run.gpu_ids", ids or "all", f"accelerate --{key}")
        else:
            draft.mark(f"accelerate --{key}", "ignored", "kohya_wrap writes the accelerate settings itself")
    if "config_file" in args:
        config = resolve(str(args["config_file"]), path.parent)
        from_file = sd_args.flatten_training_toml(read_toml_file(config, "sd-scripts config"))
        args = {**from_file, **args}  # the command line wins, as in sd-scripts
    apply_args(draft, args, chosen, lambda k: f"--{k}", path.parent, fill=True)
    return draft.finish(chosen)


def _launch_value(value: Any) -> Any:
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


def parse_options(tokens: list[str], options: Mapping[str, sd_args.ArgOption]) -> dict[str, Any]:
    """`--flag`, `--flag value`, `--flag=value`, `--list a b c` read with the parser's types."""
    args: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if not token.startswith("--"):
            continue
        name, eq, inline = token[2:].partition("=")
        values = [_unquote(inline)] if eq else []
        while not eq and i < len(tokens) and not tokens[i].startswith("--"):
            values.append(tokens[i])
            i += 1
        option = options.get(name)
        args[name] = _typed(values, option)
    return args


def _unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'" else text


def _typed(values: list[str], option: sd_args.ArgOption | None) -> Any:
    if option is None:
        return True if not values else values[0] if len(values) == 1 else values
    if option.action in ("store_true", "store_false"):
        return option.action == "store_true"
    convert: Callable[[str], Any] = {"int": int, "float": float}.get(option.type, str)
    if option.type == "int_or_float":

        def convert(v: str) -> Any:
            return float(v) if any(c in v for c in ".eE") else int(v)

    try:
        typed = [convert(v) for v in values]
    except ValueError:
        typed = list(values)
    if option.is_list:
        return typed
    return typed[0] if typed else None
