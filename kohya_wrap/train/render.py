"""Config → the files sd-scripts reads: dataset TOML, training TOML, prompts, accelerate config (pure)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kohya_wrap.config.models import Config, FluxSettings, OptimizerArg
from kohya_wrap.data.dataset import StepPlan
from kohya_wrap.errors import ConfigError
from kohya_wrap.train import sd_args
from kohya_wrap.train.layout import RunLayout

NETWORK_MODULE = {"sd15": "networks.lora", "sdxl": "networks.lora", "flux": "networks.lora_flux"}
SAVE_PRECISION = {"fp32": "float", "fp16": "fp16", "bf16": "bf16"}
# Adafactor's relative_step mode ignores the LR and scheduler; SeaArt users set both and expect them used.
ADAFACTOR_FIXED_LR = {"relative_step": False, "scale_parameter": False, "warmup_init": False}
# Set from [validation] even while it is off, so a split never bypasses its checks through run.extra_args.
VALIDATION_ARGS = frozenset({"validation_split", "validation_seed", "validate_every_n_epochs", "max_validation_steps"})
HEADER = "# Written by kohya_wrap from config.toml; edit the config, not this file.\n"
# sd-scripts reads both TOML files with the `toml` package (0.10.2), which splits lines and arrays on
# these characters even inside quoted strings; as \uXXXX escapes they reach it only after the split.
_TOML_STRUCTURE = frozenset("\"',#[]{}=")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class Rendered:
    script: str
    dataset: dict[str, Any]
    training: dict[str, dict[str, Any]]  # sections for reading; sd-scripts flattens them
    prompts: list[dict[str, Any]]
    accelerate: dict[str, Any]

    def files(self, layout: RunLayout) -> dict[str, str]:
        """File name (inside the run folder) → exact text."""
        files = {
            layout.dataset_toml.name: HEADER + toml_document(self.dataset, layout.dataset_toml.name),
            layout.train_toml.name: HEADER + toml_document(self.training, layout.train_toml.name),
            layout.accelerate.name: accelerate_yaml(self.accelerate),
        }
        if self.prompts:
            files[layout.prompts.name] = json.dumps(self.prompts, ensure_ascii=False, indent=1) + "\n"
        return files


def toml_string(text: str) -> str:
    """A TOML basic string that tomllib and sd-scripts' toml 0.10.2 both read back as exactly `text`."""
    if text == '"' or text.startswith('""'):
        # toml 0.10.2 takes a value that starts with two quotes for a triple-quoted one, however escaped.
        raise ValueError("toml 0.10.2 cannot read back a string that starts with two double quotes")
    out: list[str] = []
    previous = ""
    for char in text:
        if char == "\\":
            out.append("\\\\")
        elif char in _TOML_STRUCTURE or char < " " or char == "\x7f" or (previous == "\\" and char in "uU"):
            # A u or U after a backslash would read as the start of a \u escape in toml 0.10.2.
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
        previous = char
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # 1e-05, 0.0001, inf, nan: all TOML floats
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as a TOML value")


def toml_document(doc: Mapping[str, Any], name: str) -> str:
    """TOML for sd-scripts: scalars and flat arrays, tables, arrays of tables; never inline tables.

    tomli_w's output is valid TOML, but toml 0.10.2 misreads some of its strings (a value that starts
    with a comma inside an array, an apostrophe inside an inline table), so sd-scripts' files are
    written here, in the subset that reader handles.
    """
    lines: list[str] = []

    def table(path: tuple[str, ...], header: str | None, body: Mapping[str, Any]) -> None:
        if header is not None:
            lines.extend(["", header] if lines else [header])
        nested: list[tuple[str, Any]] = []
        for key, value in body.items():
            if not _BARE_KEY.match(key):
                raise ValueError(f"{name}: key {key!r} is not a bare TOML key")
            if isinstance(value, Mapping) or (
                isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value)
            ):
                nested.append((key, value))
                continue
            try:
                lines.append(f"{key} = {toml_value(value)}")
            except ValueError as exc:
                where = ".".join((*path, key))
                raise ConfigError(
                    f"render: {where} = {value!r} cannot be written into {name}: {exc}; change it"
                ) from None
        for key, value in nested:
            dotted = ".".join((*path, key))
            if isinstance(value, Mapping):
                table((*path, key), f"[{dotted}]", value)
            else:
                for item in value:
                    table((*path, key), f"[[{dotted}]]", item)

    table((), None, doc)
    return "\n".join(lines) + "\n"


def config_hash(cfg: Config) -> str:
    """Short, stable hash of the resolved config (written into the LoRA metadata and run.json)."""
    return hashlib.sha256(cfg.model_dump_json().encode("utf-8")).hexdigest()[:16]


def warmup_steps(cfg: Config, plan: StepPlan) -> int:
    """`lr_warmup_steps` in scheduler steps: accelerate steps the scheduler once per process per step, so
    sd-scripts schedules over max_train_steps × processes (`get_scheduler_fix`) and so must the warmup."""
    return round(plan.total_steps * plan.num_processes * cfg.optimizer.warmup_percent / 100)


def render_dataset(cfg: Config, validated: bool = True) -> dict[str, Any]:
    """dataset.toml; `validated` False leaves validation out (the dataset holds out no image worth it)."""
    ds, tr = cfg.dataset, cfg.training
    general = {
        "caption_extension": ds.caption_extension,
        "shuffle_caption": tr.shuffle_tags,
        "keep_tokens": tr.keep_tokens,
    }
    dataset: dict[str, Any] = {
        "resolution": ds.resolution,
        "batch_size": tr.batch_size,
        "enable_bucket": ds.enable_bucket,
    }
    if ds.enable_bucket:
        dataset |= {
            "min_bucket_reso": ds.min_bucket_reso,
            "max_bucket_reso": ds.max_bucket_reso,
            "bucket_reso_steps": 64,
        }
    if cfg.validation.split > 0 and validated:
        dataset |= {"validation_split": cfg.validation.split, "validation_seed": cfg.validation.seed}
    subsets = []
    for d in ds.dirs:
        subset: dict[str, Any] = {"image_dir": d.path, "num_repeats": d.repeats, "is_reg": d.is_reg}
        if d.class_token:
            subset["class_tokens"] = d.class_token
        subsets.append(subset)
    dataset["subsets"] = subsets
    return {"general": general, "datasets": [dataset]}


def optimizer_arg_text(key: str, value: OptimizerArg) -> str:
    """`key=value` whose value sd-scripts' ast.literal_eval reads back as the same Python value."""
    if isinstance(value, list):
        # A tuple literal: "()" when empty, a trailing comma for one value (else literal_eval gives a float).
        text = ",".join(repr(float(v)) for v in value) + ("," if len(value) == 1 else "") if value else "()"
    else:
        text = repr(value)
    return f"{key}={text}"


def network_args(cfg: Config) -> list[str]:
    net, args = cfg.network, []
    if net.conv_dim is not None:
        args += [f"conv_dim={net.conv_dim}", f"conv_alpha={net.conv_alpha!r}"]
    if net.block_dims is not None:
        args.append("block_dims=" + ",".join(str(v) for v in net.block_dims))
    if net.block_alphas is not None:
        args.append("block_alphas=" + ",".join(repr(float(v)) for v in net.block_alphas))
    weights = net.block_lr_weights
    if weights is not None:
        for part in ("down", "mid", "up"):
            value = getattr(weights, part)
            if isinstance(value, list):
                args.append(f"{part}_lr_weight=" + ",".join(repr(float(v)) for v in value))
            elif isinstance(value, str):
                args.append(f"{part}_lr_weight={value}")
    return args


def flux_args(fx: FluxSettings) -> dict[str, Any]:
    """Flux's sampling-schedule settings under sd-scripts' names (kohya_ss's GUI uses the same names)."""
    return {
        "guidance_scale": fx.guidance_scale,
        "timestep_sampling": fx.timestep_sampling,
        "model_prediction_type": fx.model_prediction_type,
        "discrete_flow_shift": fx.discrete_flow_shift,
    }


def render_training(cfg: Config, layout: RunLayout, plan: StepPlan) -> dict[str, dict[str, Any]]:
    m, net, opt, tr, fam = cfg.model, cfg.network, cfg.optimizer, cfg.training, cfg.model.family
    model: dict[str, Any] = {"pretrained_model_name_or_path": m.base}
    for key in ("vae", "tokenizer_cache_dir", "clip_l", "t5xxl", "ae"):
        if getattr(m, key) is not None:
            model[key] = getattr(m, key)
    if m.v_prediction:
        model["v_parameterization"] = True
        if fam == "sdxl":
            # v-prediction SDXL checkpoints (NoobAI v-pred) are trained with a zero-terminal-SNR schedule.
            model["zero_terminal_snr"] = True
    if cfg.flux is not None:
        fx = cfg.flux
        model |= flux_args(fx)
        if fx.apply_t5_attn_mask:
            model["apply_t5_attn_mask"] = True
        if fx.blocks_to_swap:
            model["blocks_to_swap"] = fx.blocks_to_swap
    if tr.fp8_base:
        model["fp8_base"] = True

    network: dict[str, Any] = {
        "network_module": NETWORK_MODULE[fam],
        "network_dim": net.dim,
        "network_alpha": float(net.alpha or 0),
    }
    if args := network_args(cfg):
        network["network_args"] = args
    if net.train_unet_only:
        network["network_train_unet_only"] = True
    if net.train_text_encoder_only:
        network["network_train_text_encoder_only"] = True

    optimizer: dict[str, Any] = {"optimizer_type": opt.type, "learning_rate": opt.learning_rate}
    opt_args = dict(opt.args)
    if opt.type == "Adafactor" and "relative_step" not in opt_args:
        opt_args = ADAFACTOR_FIXED_LR | opt_args
    if opt_args:
        optimizer["optimizer_args"] = [optimizer_arg_text(k, v) for k, v in opt_args.items()]
    if opt.unet_lr is not None:
        optimizer["unet_lr"] = opt.unet_lr
    if opt.text_encoder_lr is not None:
        optimizer["text_encoder_lr"] = [opt.text_encoder_lr]
    optimizer |= {"lr_scheduler": opt.scheduler, "lr_warmup_steps": warmup_steps(cfg, plan)}
    if opt.scheduler == "cosine_with_restarts":
        optimizer["lr_scheduler_num_cycles"] = opt.restarts
    if opt.min_snr_gamma is not None:
        optimizer["min_snr_gamma"] = opt.min_snr_gamma

    training: dict[str, Any] = {
        "max_train_epochs": tr.epochs,
        "max_train_steps": plan.total_steps,
        "mixed_precision": tr.mixed_precision,
        "seed": tr.seed,
        "gradient_checkpointing": tr.gradient_checkpointing,
        "cache_latents": tr.cache_latents,
    }
    if fam == "sd15" or (fam == "sdxl" and tr.clip_skip != 1):
        training["clip_skip"] = tr.clip_skip
    if tr.weighted_captions:
        training["weighted_captions"] = True
    if tr.max_token_length != 75:
        training["max_token_length"] = tr.max_token_length
    if tr.noise_offset is not None:
        training["noise_offset"] = tr.noise_offset
    if tr.multires_noise_iterations is not None:
        training["multires_noise_iterations"] = tr.multires_noise_iterations
        if tr.multires_noise_discount is not None:
            training["multires_noise_discount"] = tr.multires_noise_discount
    if tr.cache_text_encoder_outputs:
        training["cache_text_encoder_outputs"] = True
    if fam != "flux" and tr.attention != "none":
        training[tr.attention] = True
    if tr.cache_latents:
        # Latents are in memory, so worker processes only cost start-up time.
        training["max_data_loader_n_workers"] = 0
    else:
        training |= {"max_data_loader_n_workers": 2, "persistent_data_loader_workers": True}

    saving: dict[str, Any] = {
        "output_dir": str(layout.output_dir),
        "output_name": cfg.output_name,
        "save_model_as": "safetensors",
        "save_precision": SAVE_PRECISION[cfg.save.precision],
        "save_every_n_epochs": cfg.save.every_n_epochs,
        "save_state": cfg.save.save_state,
        "training_comment": f"kohya_wrap config {config_hash(cfg)}",
        "metadata_title": cfg.output_name,
    }
    if cfg.tagging.trigger_word:
        saving["metadata_trigger_phrase"] = cfg.tagging.trigger_word

    doc: dict[str, dict[str, Any]] = {
        "model": model,
        "dataset": {"dataset_config": str(layout.dataset_toml)},
        "network": network,
        "optimizer": optimizer,
        "training": training,
        "saving": saving,
    }
    if cfg.sampling.prompts and cfg.sampling.every_n_epochs > 0:
        doc["sampling"] = {
            "sample_prompts": str(layout.prompts),
            "sample_every_n_epochs": cfg.sampling.every_n_epochs,
            "sample_sampler": cfg.sampling.sampler,
        }
    if cfg.validation.split > 0 and plan.validation_images > 0:
        doc["validation"] = {"validate_every_n_epochs": cfg.validation.every_n_epochs}
        if cfg.validation.max_batches is not None:
            doc["validation"]["max_validation_steps"] = cfg.validation.max_batches
    doc["logging"] = {"logging_dir": str(layout.logging_dir), "log_with": "tensorboard", "console_log_simple": True}
    if cfg.run.extra_args:
        doc["extra"] = dict(cfg.run.extra_args)
    return doc


def render_prompts(cfg: Config) -> list[dict[str, Any]]:
    res = cfg.dataset.resolution
    prompts = []
    for i, p in enumerate(cfg.sampling.prompts):
        entry: dict[str, Any] = {
            "prompt": p.text,
            "width": p.width or res,
            "height": p.height or res,
            "sample_steps": p.steps,
            # A fixed seed per prompt makes the same image across epochs, so epochs can be compared.
            "seed": p.seed if p.seed is not None else cfg.training.seed + i,
        }
        if p.negative:
            entry["negative_prompt"] = p.negative
        if cfg.model.family == "flux":
            entry["guidance_scale"] = p.cfg
        else:
            entry["scale"] = p.cfg
        prompts.append(entry)
    return prompts


def render_accelerate(cfg: Config) -> dict[str, Any]:
    run = cfg.run
    multi = run.num_processes > 1 or run.num_machines > 1
    doc: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "debug": False,
        "distributed_type": "MULTI_GPU" if multi else "NO",
        "downcast_bf16": "no",
        "dynamo_config": {},
        "gpu_ids": "all" if run.gpu_ids == "all" else ",".join(str(g) for g in run.gpu_ids),
        "machine_rank": run.machine_rank,
        "main_training_function": "main",
        "mixed_precision": cfg.training.mixed_precision,
        "num_machines": run.num_machines,
        "num_processes": run.num_processes,
        "rdzv_backend": "static",
        "same_network": True,
        "tpu_env": [],
        "tpu_use_cluster": False,
        "tpu_use_sudo": False,
        "use_cpu": False,
    }
    if run.num_machines > 1:
        doc["main_process_ip"] = run.main_process_ip
        doc["main_process_port"] = run.main_process_port or 29500
    return doc


def accelerate_yaml(doc: dict[str, Any]) -> str:
    """YAML by hand: every value is a scalar, an empty map or an empty list, and JSON scalars are YAML."""
    lines = []
    for key, value in doc.items():
        if isinstance(value, dict | list):
            assert not value, "only empty containers are written"
        lines.append(f"{key}: {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def check_extra_args(cfg: Config, owned: set[str], script: str) -> None:
    problems = []
    for key, value in cfg.run.extra_args.items():
        if key in owned:
            problems.append(
                f"run.extra_args.{key}: kohya_wrap already sets this from the config; use the "
                "matching config key instead"
            )
            continue
        problems += [f"run.extra_args.{key}: {msg}" for msg in sd_args.check_training_args(script, {key: value})]
    if problems:
        raise ConfigError(*problems)


def render(cfg: Config, layout: RunLayout, plan: StepPlan) -> Rendered:
    """Everything sd-scripts reads for this run; every training key is checked against its parser."""
    script = sd_args.SCRIPT_BY_FAMILY[cfg.model.family]
    training = render_training(cfg, layout, plan)
    dataset = render_dataset(cfg, validated=plan.validation_images > 0)
    owned = {k for name, section in training.items() if name != "extra" for k in section}
    # sd-scripts reads dataset keys from the command line too, but dataset.toml wins where both say.
    owned |= {k for table in (dataset["general"], *dataset["datasets"]) for k in table if k != "subsets"}
    owned |= VALIDATION_ARGS
    check_extra_args(cfg, owned, script)
    ours = {k: v for name, section in training.items() if name != "extra" for k, v in section.items()}
    problems = sd_args.check_training_args(script, ours)
    if problems:
        # Our own keys failing the contract is a bug in kohya_wrap, never something the user can fix.
        raise RuntimeError(f"kohya_wrap rendered arguments outside the sd-scripts contract: {problems}")
    rendered = Rendered(script, dataset, training, render_prompts(cfg), render_accelerate(cfg))
    rendered.files(layout)  # a value the TOML writer refuses fails here, before any file is written
    return rendered
