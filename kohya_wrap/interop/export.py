"""Our config as a kohya_ss GUI config (its LoRA tab's field names and value conventions)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from kohya_wrap.config.models import Config

SAVE_PRECISION = {"fp32": "float", "fp16": "fp16", "bf16": "bf16"}
ADAFACTOR_FIXED_LR = {"relative_step": False, "scale_parameter": False, "warmup_init": False}
_PREFIXED = re.compile(r"^(\d+)_(.+)$")


@dataclass(frozen=True)
class KohyaExport:
    """The GUI config, the dataset TOML it points to (when the folders need one), and what it cannot hold."""

    settings: dict[str, Any]
    dataset_toml: str | None
    not_carried: tuple[str, ...]


def to_kohya_ss(cfg: Config, dataset_path: Path) -> KohyaExport:
    """`cfg` in kohya_ss's vocabulary; `dataset_path` is where the dataset TOML goes if one is needed."""
    from kohya_wrap.train.render import render_dataset, toml_document

    m, ds, net, opt, tr, fam = cfg.model, cfg.dataset, cfg.network, cfg.optimizer, cfg.training, cfg.model.family
    lost: list[str] = []
    extra: list[str] = []
    folders = kohya_folders(cfg)
    dataset_toml = None
    if folders is None:
        dataset_toml = toml_document(render_dataset(cfg), dataset_path.name)
    settings: dict[str, Any] = {
        "LoRA_type": "Flux1" if fam == "flux" else ("Kohya LoCon" if net.conv_dim is not None else "Standard"),
        "sdxl": fam == "sdxl",
        "v2": False,
        "flux1_checkbox": fam == "flux",
        "sd3_checkbox": False,
        "v_parameterization": m.v_prediction,
        "pretrained_model_name_or_path": m.base,
        "vae": m.vae or "",
        "clip_l": m.clip_l or "",
        "t5xxl": m.t5xxl or "",
        "ae": m.ae or "",
        "train_data_dir": folders[0] if folders else "",
        "reg_data_dir": folders[1] if folders else "",
        "dataset_config": str(dataset_path) if folders is None else "",
        "max_resolution": f"{ds.resolution},{ds.resolution}",
        "enable_bucket": ds.enable_bucket,
        "min_bucket_reso": ds.min_bucket_reso,
        "max_bucket_reso": ds.max_bucket_reso,
        "bucket_reso_steps": 64,
        "bucket_no_upscale": False,
        "caption_extension": ds.caption_extension,
        "shuffle_caption": tr.shuffle_tags,
        "keep_tokens": tr.keep_tokens,
        "network_dim": net.dim,
        "network_alpha": net.alpha,
        "conv_dim": net.conv_dim if net.conv_dim is not None and fam != "flux" else 1,
        "conv_alpha": net.conv_alpha if net.conv_alpha is not None and fam != "flux" else 1,
        "block_dims": _numbers(net.block_dims),
        "block_alphas": _numbers(net.block_alphas),
        "optimizer": opt.type,
        "optimizer_args": "",
        "lr_scheduler": opt.scheduler,
        "lr_scheduler_num_cycles": opt.restarts if opt.scheduler == "cosine_with_restarts" else "",
        "lr_warmup": opt.warmup_percent,
        "lr_warmup_steps": 0,
        "min_snr_gamma": opt.min_snr_gamma or 0,
        "epoch": tr.epochs,
        "max_train_epochs": tr.epochs,
        "max_train_steps": 0,
        "train_batch_size": tr.batch_size,
        "mixed_precision": tr.mixed_precision,
        "seed": tr.seed,
        "clip_skip": tr.clip_skip or 0,
        "weighted_captions": tr.weighted_captions,
        "max_token_length": tr.max_token_length,
        "gradient_checkpointing": tr.gradient_checkpointing,
        "cache_latents": tr.cache_latents,
        "cache_latents_to_disk": False,
        "sdxl_cache_text_encoder_outputs": fam == "sdxl" and tr.cache_text_encoder_outputs,
        "flux1_cache_text_encoder_outputs": fam == "flux" and tr.cache_text_encoder_outputs,
        "flux1_cache_text_encoder_outputs_to_disk": False,
        "fp8_base": tr.fp8_base,
        "xformers": tr.attention,
        "output_dir": str(Path(cfg.run.runs_dir) / cfg.output_name),
        "logging_dir": str(Path(cfg.run.runs_dir) / cfg.output_name / "logs"),
        "output_name": cfg.output_name,
        "save_every_n_epochs": cfg.save.every_n_epochs,
        "save_precision": SAVE_PRECISION[cfg.save.precision],
        "save_state": cfg.save.save_state,
        "save_model_as": "safetensors",
        "sample_every_n_epochs": cfg.sampling.every_n_epochs,
        "sample_every_n_steps": 0,
        "sample_sampler": cfg.sampling.sampler,
        "sample_prompts": "",
        "num_processes": cfg.run.num_processes,
        "num_machines": cfg.run.num_machines,
        "multi_gpu": cfg.run.num_processes > 1,
        "gpu_ids": "" if cfg.run.gpu_ids == "all" else ",".join(str(g) for g in cfg.run.gpu_ids),
        "num_cpu_threads_per_process": cfg.run.cpu_threads_per_process,
        "main_process_port": cfg.run.main_process_port or 0,
        "huggingface_token": "",
        "wandb_api_key": "",
    }
    _block_lr_weights(cfg, settings)
    _learning_rates(cfg, settings)
    _noise(cfg, settings, lost)
    _optimizer_args(cfg, settings, lost)
    settings["sample_prompts"] = _prompts(cfg, lost)
    if cfg.flux is not None:
        from kohya_wrap.train.render import flux_args

        fx = cfg.flux
        settings |= flux_args(fx) | {"apply_t5_attn_mask": fx.apply_t5_attn_mask, "blocks_to_swap": fx.blocks_to_swap}
        if net.conv_dim is not None:
            lost.append("network.conv_dim: kohya_ss's Flux1 LoRA type has no conv layers")
    if fam == "sdxl" and m.v_prediction:
        extra.append("--zero_terminal_snr")
    if m.tokenizer_cache_dir:
        _word(extra, "tokenizer_cache_dir", m.tokenizer_cache_dir, "model.tokenizer_cache_dir", lost)
    if cfg.tagging.trigger_word:
        _word(extra, "metadata_trigger_phrase", cfg.tagging.trigger_word, "tagging.trigger_word", lost)
    if cfg.validation.split > 0:
        seed = cfg.validation.seed if cfg.validation.seed is not None else tr.seed
        extra += [f"--validation_split {cfg.validation.split!r}", f"--validation_seed {seed}"]
        extra.append(f"--validate_every_n_epochs {cfg.validation.every_n_epochs}")
        if cfg.validation.max_batches is not None:
            extra.append(f"--max_validation_steps {cfg.validation.max_batches}")
    for key, value in cfg.run.extra_args.items():
        _extra_arg(extra, key, value, lost)
    settings["additional_parameters"] = " ".join(extra)
    lost += _not_in_kohya_ss(cfg)
    return KohyaExport(dict(sorted(settings.items())), dataset_toml, tuple(lost))


def kohya_folders(cfg: Config) -> tuple[str, str] | None:
    """(train_data_dir, reg_data_dir) when the dataset folders are exactly kohya's `<repeats>_<name>` folders
    of one parent each (and nothing else there kohya would also read); else None."""
    parents = []
    for reg in (False, True):
        group = [d for d in cfg.dataset.dirs if d.is_reg == reg]
        if not group:
            parents.append("")
            continue
        parent = {str(PurePath(d.path).parent) for d in group}
        if len(parent) != 1:
            return None
        for d in group:
            match = _PREFIXED.match(PurePath(d.path).name)
            if match is None or int(match[1]) != d.repeats or (d.class_token or "") != match[2].strip():
                return None
        folder = Path(next(iter(parent)))
        if not folder.is_dir():
            return None
        on_disk = {str(p) for p in folder.iterdir() if p.is_dir() and _PREFIXED.match(p.name)}
        if on_disk != {d.path for d in group}:
            return None
        parents.append(str(folder))
    if parents[0] and parents[0] == parents[1]:
        return None
    return parents[0], parents[1]


def _numbers(values: list[int] | list[float] | None) -> str:
    return "" if values is None else ",".join(repr(v) if isinstance(v, float) else str(v) for v in values)


def _block_lr_weights(cfg: Config, settings: dict[str, Any]) -> None:
    weights = cfg.network.block_lr_weights
    for part in ("down", "mid", "up"):
        value = getattr(weights, part) if weights is not None else None
        settings[f"{part}_lr_weight"] = value if isinstance(value, str) else _numbers(value)


def _learning_rates(cfg: Config, settings: dict[str, Any]) -> None:
    """kohya_ss: 0 = unset, and a text encoder LR of 0 next to a U-Net LR trains only the U-Net."""
    opt, net = cfg.optimizer, cfg.network
    unet = opt.unet_lr or 0.0
    text = opt.text_encoder_lr or 0.0
    if net.train_unet_only:
        unet, text = unet or opt.learning_rate, 0.0
    elif net.train_text_encoder_only:
        unet, text = 0.0, text or opt.learning_rate
    settings |= {"learning_rate": opt.learning_rate, "unet_lr": unet, "text_encoder_lr": text}


def _noise(cfg: Config, settings: dict[str, Any], lost: list[str]) -> None:
    tr = cfg.training
    multires = tr.multires_noise_iterations is not None
    settings |= {
        "noise_offset_type": "Multires" if multires and tr.noise_offset is None else "Original",
        "noise_offset": tr.noise_offset or 0,
        "multires_noise_iterations": tr.multires_noise_iterations or 0,
        "multires_noise_discount": tr.multires_noise_discount or 0,
    }
    if multires and tr.noise_offset is not None:
        lost.append("training.multires_noise_iterations: kohya_ss uses either noise_offset or multires noise, not both")


def _optimizer_args(cfg: Config, settings: dict[str, Any], lost: list[str]) -> None:
    from kohya_wrap.train.render import optimizer_arg_text

    args = dict(cfg.optimizer.args)
    if cfg.optimizer.type == "Adafactor" and "relative_step" not in args:
        args = ADAFACTOR_FIXED_LR | args
    words = []
    for key, value in args.items():
        text = optimizer_arg_text(key, value)
        if re.search(r'[\s"]', text):
            lost.append(f"optimizer.args.{key}: kohya_ss splits optimizer_args on spaces and drops double quotes")
        else:
            words.append(text)
    settings["optimizer_args"] = " ".join(words)


def _prompts(cfg: Config, lost: list[str]) -> str:
    """sd-scripts' prompt lines, every value explicit so the images are the same as ours."""
    res = cfg.dataset.resolution
    scale = "--g" if cfg.model.family == "flux" else "--l"
    lines = []
    for i, p in enumerate(cfg.sampling.prompts):
        texts = {"text": p.text, "negative": p.negative}
        unreadable = [key for key, text in texts.items() if " --" in text or (key == "text" and text.startswith("#"))]
        if unreadable:
            lost.extend(
                f"sampling.prompts.{i}.{key}: kohya_ss's prompt lines read ' --' as an option and '#' as a comment"
                for key in unreadable
            )
            continue
        seed = p.seed if p.seed is not None else cfg.training.seed + i
        line = p.text + (f" --n {p.negative}" if p.negative else "")
        line += f" --w {p.width or res} --h {p.height or res} --s {p.steps} {scale} {p.cfg!r} --d {seed}"
        lines.append(line)
    return "\n".join(lines)


def _word(extra: list[str], option: str, value: str, where: str, lost: list[str]) -> None:
    if re.search(r'[\s"]', value):
        lost.append(f"{where}: kohya_ss splits additional_parameters on spaces and drops double quotes")
    else:
        extra.append(f"--{option} {value}")


def _extra_arg(extra: list[str], key: str, value: Any, lost: list[str]) -> None:
    values = value if isinstance(value, list) else [value]
    if value is True:
        extra.append(f"--{key}")
        return
    if value is False:
        return  # a store_true option at its default
    words = [repr(v) if isinstance(v, float) else str(v) for v in values]
    if any(re.search(r'[\s"]', w) for w in words) or any(w == "" for w in words):
        lost.append(f"run.extra_args.{key}: kohya_ss splits additional_parameters on spaces and drops double quotes")
        return
    extra.append(f"--{key} " + " ".join(words))


def _not_in_kohya_ss(cfg: Config) -> list[str]:
    """Our settings kohya_ss has no field for."""
    from kohya_wrap.config.models import RunSettings, TaggingSettings

    lost = []
    tagging = TaggingSettings()
    for key in TaggingSettings.model_fields:
        if key != "trigger_word" and getattr(cfg.tagging, key) != getattr(tagging, key):
            lost.append(f"tagging.{key}: kohya_ss has no tagging settings (its captioning tools are separate)")
    if cfg.dataset.crop != "none":
        lost.append("dataset.crop: kohya_ss trains on the images as they are (crop them with `kohya-wrap prepare`)")
    run = RunSettings()
    for key in ("sd_scripts_dir", "python", "stop_on_nan", "machine_rank", "main_process_ip"):
        if getattr(cfg.run, key) != getattr(run, key):
            lost.append(f"run.{key}: kohya_ss has no such setting")
    return lost
