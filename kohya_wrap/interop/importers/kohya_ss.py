"""kohya_ss GUI configs (its saved LoRA configs and presets/lora/*.json): GUI fields onto our settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kohya_wrap.errors import ConfigError
from kohya_wrap.interop.importers import sd_scripts as sd
from kohya_wrap.interop.importers.draft import Draft, Imported, is_secret
from kohya_wrap.train import sd_args

# LoRA types: the ones we train, and what kohya_ss calls each of them.
SUPPORTED_TYPES = {"Standard": False, "Kohya LoCon": True, "LyCORIS/LoCon": True, "LoCon": True, "Flux1": False}
# Model families kohya_ss can train that we do not.
OTHER_FAMILIES = {
    "v2": "SD 2.x",
    "sd3_checkbox": "SD3",
    "hunyuan_image_checkbox": "HunyuanImage",
    "anima_checkbox": "Anima",
    "lumina_checkbox": "Lumina",
}
# Only the GUI reads these; they do not change the training.
GUI_ONLY = {
    "model_list": "the GUI's model picker",
    "save_as_bool": "a GUI switch",
    "log_tracker_name": "the GUI's logging",
    "log_tracker_config": "the GUI's logging",
    "multi_gpu": "kohya_wrap decides from run.num_processes",
    "noise_offset_type": "selects which noise settings apply (read with them)",
    "use_wandb": "kohya_wrap logs to TensorBoard",
    "wandb_run_name": "kohya_wrap logs to TensorBoard",
    "LyCORIS_preset": "a LyCORIS setting",
    "train_norm": "a LyCORIS setting",
    "train_on_input": "a LyCORIS (iA3) setting",
    "use_cp": "a LyCORIS setting",
    "use_tucker": "a LyCORIS setting",
    "use_scalar": "a LyCORIS setting",
    "rescaled": "a LyCORIS setting",
    "constrain": "a LyCORIS setting",
    "decompose_both": "a LyCORIS setting",
    "factor": "a LyCORIS/LoKr setting",
    "dora_wd": "a LyCORIS setting",
    "bypass_mode": "a LyCORIS setting",
    "rank_dropout_scale": "a LyCORIS setting",
    "unit": "a DyLoRA setting",
    "dynamo_mode": "the GUI's torch.compile settings",
    "dynamo_use_dynamic": "the GUI's torch.compile settings",
    "dynamo_use_fullgraph": "the GUI's torch.compile settings",
    "sd3_text_encoder_batch_size": "an SD3 setting",
    "split_mode": "a Flux setting kohya_wrap does not use",
    "train_blocks": "a Flux setting kohya_wrap does not use",
}
# Network arguments of LoRA kinds kohya_wrap has no setting for.
NETWORK_EXTRAS = (
    "conv_block_dims",
    "conv_block_alphas",
    "block_lr_zero_threshold",
    "rank_dropout",
    "module_dropout",
    "loraplus_lr_ratio",
    "loraplus_unet_lr_ratio",
    "loraplus_text_encoder_lr_ratio",
    "t5xxl_lr",
    "stop_text_encoder_training",
)
LAUNCH = {
    "num_processes": "run.num_processes",
    "num_machines": "run.num_machines",
    "num_cpu_threads_per_process": "run.cpu_threads_per_process",
    "main_process_port": "run.main_process_port",
}
# kohya_ss GUI keys with sd-scripts' name for them.
RENAMED = {"optimizer": "optimizer_type", "flux1_clip_l": "clip_l", "flux1_t5xxl": "t5xxl"}
# Settings of SD3 and the other DiT families kohya_ss's GUI stores in every config.
OTHER_MODEL_PREFIXES = ("sd3_", "hunyuan", "anima", "lumina")
OTHER_MODEL_KEYS = frozenset(
    {"clip_g", "clip_g_dropout_rate", "clip_l_dropout_rate", "t5_dropout_rate", "logit_mean", "logit_std",
     "mode_scale", "weighting_scheme", "save_clip", "save_t5xxl", "t5xxl_device", "t5xxl_dtype",
     "enable_scaled_pos_embed", "pos_emb_random_crop_rate", "learning_rate_te", "learning_rate_te1",
     "learning_rate_te2"}
)  # fmt: skip
# kohya_ss writes None for these when they are 0.
ZERO_IS_OFF = frozenset({"vae_batch_size"})
STRING_KEYS = frozenset(
    {"output_name", "sample_prompts", "optimizer_args", "additional_parameters", "training_comment"}
)


def number(value: Any) -> Any:
    """kohya_ss stores many numbers as strings ("1", "0.0001"); "" means unset."""
    if isinstance(value, str):
        text = value.strip()
        if text == "":
            return None
        try:
            return int(text)
        except ValueError:
            pass
        try:
            return float(text)
        except ValueError:
            return value
    return value


def zero_unset(value: Any) -> Any:
    """kohya_ss's 0 for "off" on settings whose sd-scripts default is None."""
    value = number(value)
    return None if value == 0 and not isinstance(value, bool) else value


def family_of(doc: dict[str, Any], path: Path) -> str:
    for key, name in OTHER_FAMILIES.items():
        if doc.get(key) is True:
            raise ConfigError(
                f"import: {path.name} trains {name} ({key} = true); kohya_wrap trains SD1.5, SDXL and Flux"
            )
    if doc.get("flux1_checkbox") is True or doc.get("LoRA_type") == "Flux1":
        return "flux"
    return "sdxl" if doc.get("sdxl") is True else "sd15"


def read_kohya_ss(path: Path, doc: dict[str, Any]) -> Imported:
    """A kohya_ss GUI config: every field is mapped, passed on to sd-scripts, or named with the reason."""
    if "LoRA_type" not in doc and "network_dim" not in doc:
        kind = "textual inversion" if "token_string" in doc else "DreamBooth or fine-tuning"
        raise ConfigError(f"import: {path.name} is a kohya_ss {kind} config; kohya_wrap imports LoRA configs")
    family = family_of(doc, path)
    draft = Draft("kohya_ss GUI config", path)
    draft.set_value("model.family", family, "sdxl / flux1_checkbox")
    lora_type = str(doc.get("LoRA_type", "Standard"))
    locon = SUPPORTED_TYPES.get(lora_type)
    args: dict[str, Any] = {}
    names: dict[str, str] = {}
    noise_type = str(doc.get("noise_offset_type", "Original"))
    epochs = zero_unset(doc.get("max_train_epochs"))
    options = sd_args.load_spec().options(sd_args.SCRIPT_BY_FAMILY[family])

    def give(key: str, value: Any, sd_key: str | None = None) -> None:
        args[sd_key or key] = value
        names[sd_key or key] = key

    for key, raw in doc.items():
        value = raw if key in STRING_KEYS else number(raw)
        if is_secret(key) and value in (None, ""):
            draft.mark(key, "unset", "empty")
        elif is_secret(key):
            draft.secret(key)
        elif key in ("sdxl", "flux1_checkbox"):
            if value:
                draft.put("model.family", family, key)
            else:
                draft.mark(key, "unset", "false")
        elif key in OTHER_FAMILIES:
            draft.mark(key, "unset", "false")
        elif key == "LoRA_type":
            if locon is None:
                draft.drop(key, f"{lora_type} is not supported; kohya_wrap trains LoRA and LoCon (Kohya LoCon)")
            else:
                draft.mark(key, "same", f"kohya_wrap trains {lora_type}" + (" with conv layers" if locon else ""))
        elif key in ("conv_dim", "conv_alpha"):
            if locon:
                draft.put(f"network.{key}", int(value) if key == "conv_dim" else float(value), key)
            else:
                draft.mark(key, "ignored", f"only LoCon uses it (LoRA_type is {lora_type})")
        elif key in GUI_ONLY:
            draft.mark(key, "ignored", GUI_ONLY[key])
        elif key in NETWORK_EXTRAS:
            if zero_unset(value) is None or value is False:
                draft.mark(key, "unset", "0")
            else:
                draft.drop(key, "kohya_wrap has no setting for it")
        elif key in LAUNCH:
            if zero_unset(value) is None:
                draft.mark(key, "unset", "0")
            else:
                draft.put(LAUNCH[key], value, key)
        elif key == "gpu_ids":
            ids = [int(v) for v in str(value or "").split(",") if v.strip().isdigit()]
            draft.put("run.gpu_ids", ids, key) if ids else draft.mark(key, "unset", "empty")
        elif key in ("extra_accelerate_launch_args", "dynamo_backend"):
            if value in (None, "", "no"):
                draft.mark(key, "unset", "empty")
            else:
                draft.drop(key, "kohya_wrap writes the accelerate settings itself")
        elif key == "epoch":
            if epochs is None:
                draft.put("training.epochs", value, key)
            else:
                draft.mark(key, "ignored", "max_train_epochs is set and wins")
        elif key == "max_train_epochs":
            draft.put("training.epochs", epochs, key) if epochs is not None else draft.mark(key, "unset", "0")
        elif key == "max_train_steps":
            if zero_unset(value) is None:
                draft.mark(key, "unset", "0")
            elif epochs is not None:
                draft.mark(key, "ignored", "max_train_epochs is set and wins")
            else:
                draft.drop(key, "kohya_wrap trains by epochs; training.epochs comes from `epoch`")
        elif key == "max_resolution":
            give(key, value, "resolution")
        elif key == "lr_warmup":
            if zero_unset(value) is None:
                draft.mark(key, "unset", "0")
            elif zero_unset(doc.get("lr_warmup_steps")) is not None:
                draft.mark(key, "ignored", "lr_warmup_steps is set and wins")
            else:
                draft.put("optimizer.warmup_percent", float(value), key)
        elif key == "lr_warmup_steps":
            steps = zero_unset(value)
            total = zero_unset(doc.get("max_train_steps"))
            if steps is None:
                draft.mark(key, "unset", "0")
            elif total:
                draft.put("optimizer.warmup_percent", sd.warmup_percent(int(steps), int(total)), key)
            else:
                draft.drop(key, "counts steps and max_train_steps is not set; set optimizer.warmup_percent")
        elif key == "xformers":
            attention = {True: "xformers", "xformers": "xformers", "sdpa": "sdpa"}.get(value, "none")
            if family == "flux":
                draft.mark(key, "ignored", "Flux training ignores the attention setting")
            else:
                draft.put("training.attention", attention, key)
        elif key == "optimizer_args":
            text = str(value or "").replace('"', "")
            give(key, text.split()) if text.strip() else draft.mark(key, "unset", "empty")
        elif key in ("unet_lr", "text_encoder_lr"):
            _learning_rate(draft, doc, key)
        elif key in ("block_dims", "block_alphas", "down_lr_weight", "mid_lr_weight", "up_lr_weight"):
            text = str(raw).strip() if raw is not None else ""
            if not text:
                draft.mark(key, "unset", "empty")
            else:
                sd.network_args_into(draft, {key: text}, lambda name: name)
        elif key in ("noise_offset", "adaptive_noise_scale", "noise_offset_random_strength"):
            if noise_type != "Original":
                draft.mark(key, "ignored", f"noise_offset_type is {noise_type}")
            else:
                give(key, zero_unset(value) if key != "noise_offset_random_strength" else value)
        elif key in ("multires_noise_iterations", "multires_noise_discount"):
            if noise_type != "Multires":
                draft.mark(key, "ignored", f"noise_offset_type is {noise_type}")
            else:
                give(key, zero_unset(value))
        elif key in ("seed", "clip_skip", "min_snr_gamma", "save_every_n_epochs", "vae", "ip_noise_gamma"):
            value = zero_unset(value)
            if value is None and key == "seed":
                draft.mark(key, "unset", "kohya_ss's 0 is a random seed; kohya_wrap always uses one (42)")
            elif value is None:
                draft.mark(key, "unset", "0 or empty")
            else:
                give(key, value)
        elif key == "sample_prompts":
            entries = sd.prompts_from_text(str(value or ""))
            if entries:
                sd.add_prompts(draft, entries, key, family)
            else:
                draft.mark(key, "unset", "empty")
        elif key == "sample_every_n_epochs":
            if sd.prompts_from_text(str(doc.get("sample_prompts") or "")):
                draft.put("sampling.every_n_epochs", zero_unset(value) or 0, key)
            else:
                draft.mark(key, "unset", "no sample prompts")
        elif key == "caption_extension" and value == ".none-use-foldername":
            draft.mark(key, "same", "kohya_wrap captions images without a caption file with their folder's name")
        elif key == "caption_extension":
            give(key, value or ".caption")
        elif key == "sdxl_no_half_vae":
            if family == "sdxl" and value:
                draft.extra("no_half_vae", True, key)
            else:
                draft.mark(key, "unset" if not value else "ignored", "only SDXL uses it")
        elif key in ("sdxl_cache_text_encoder_outputs", "flux1_cache_text_encoder_outputs"):
            if (key.startswith("sdxl") and family == "sdxl") or (key.startswith("flux") and family == "flux"):
                draft.put("training.cache_text_encoder_outputs", bool(value), key)
            else:
                draft.mark(key, "ignored", f"a {key.split('_')[0]} setting; this is a {family} config")
        elif key == "flux1_cache_text_encoder_outputs_to_disk":
            give(key, value, "cache_text_encoder_outputs_to_disk")
        elif key == "additional_parameters":
            _additional(draft, str(value or ""), family, give)
        elif key == "lr_scheduler_num_cycles" and value is None and doc.get("lr_scheduler") == "cosine_with_restarts":
            cycles = zero_unset(doc.get("max_train_epochs")) or number(doc.get("epoch"))
            draft.put("optimizer.restarts", cycles, key, "empty: kohya_ss restarts once per epoch")
        elif key == "max_timestep" and value == 1000:
            draft.mark(key, "unset", "1000: all timesteps")
        elif key.startswith(OTHER_MODEL_PREFIXES) or key in OTHER_MODEL_KEYS:
            draft.mark(key, "ignored", "a setting of a model family kohya_wrap does not train")
        elif key == "resume":
            if value in (None, ""):
                draft.mark(key, "unset", "empty")
            else:
                draft.drop(key, "kohya_wrap resumes its own runs (`kohya-wrap train --resume RUN`)")
        else:
            sd_key = RENAMED.get(key, key)
            option = options.get(sd_key)
            zero_off = option is not None and (option.default is None or sd_key in ZERO_IS_OFF)
            give(key, zero_unset(value) if zero_off else _blank(value), sd_key)
    sd.apply_args(draft, args, family, lambda k: names.get(k, k), path.parent, fill=False)
    return draft.finish(family, order=list(doc))


def _blank(value: Any) -> Any:
    return None if value == "" else value


def _learning_rate(draft: Draft, doc: dict[str, Any], key: str) -> None:
    """kohya_ss: 0 = unset; a text encoder LR of 0 with a U-Net LR trains the U-Net only (and the reverse)."""
    unet = zero_unset(doc.get("unet_lr")) or 0
    text = zero_unset(doc.get("text_encoder_lr")) or 0
    value = unet if key == "unet_lr" else text
    other = text if key == "unet_lr" else unet
    if value:
        draft.put(f"optimizer.{key}", float(value), key)
    elif other:
        part = "train_text_encoder_only" if key == "unet_lr" else "train_unet_only"
        draft.put(f"network.{part}", True, key, "0 here and not in the other LR: kohya_ss trains one part only")
    else:
        draft.mark(key, "unset", "0: learning_rate applies")


def _additional(draft: Draft, text: str, family: str, give: Any) -> None:
    """kohya_ss passes `additional_parameters` to sd-scripts as extra command-line words."""
    words = text.replace('"', "").split()
    if not words:
        draft.mark("additional_parameters", "unset", "empty")
        return
    options = sd_args.load_spec().options(sd_args.SCRIPT_BY_FAMILY[family])
    for key, value in sd.parse_options(words, options).items():
        give(f"additional_parameters: --{key}", value, key)
