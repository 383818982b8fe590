"""Cross-field rules on a resolved `Config`: errors (what cannot work) and advice (SeaArt's, sd-scripts' traps)."""

from __future__ import annotations

from collections.abc import Callable

from kohya_wrap.config.defaults import VARIANT_DEFAULTS
from kohya_wrap.config.models import Config

ADAPTIVE_OPTIMIZERS = frozenset({"DAdaptation", "DAdaptAdam", "Prodigy"})
# sd-scripts' block-wise list lengths (networks/lora.py): block dims, and down/mid/up LR weights.
BLOCK_DIMS_LEN = {"sd15": 25, "sdxl": 23}
BLOCK_LR_LEN = {"sd15": (12, 1, 12), "sdxl": (9, 3, 9)}

Check = Callable[[Config], list[str]]


def errors(cfg: Config) -> list[str]:
    """Every rule the config breaks, as `section.key: message` lines (empty when it can train)."""
    return [problem for check in ERROR_CHECKS for problem in check(cfg)]


def advice(cfg: Config) -> list[str]:
    """SeaArt's advice and sd-scripts' quiet traps, as `section.key: message` lines."""
    return [message for check in WARNING_CHECKS for message in check(cfg)]


# ---- errors: what cannot work ------------------------------------------------------------------


def check_variant(cfg: Config) -> list[str]:
    known = VARIANT_DEFAULTS[cfg.model.family]
    if cfg.model.variant not in known:
        return [
            f"model.variant: '{cfg.model.variant}' is not a {cfg.model.family} variant; use one of {', '.join(known)}"
        ]
    return []


def check_flux_files(cfg: Config) -> list[str]:
    if cfg.model.family != "flux":
        extra = [k for k in ("clip_l", "t5xxl", "ae") if getattr(cfg.model, k) is not None]
        flux_section = (
            ['flux: the [flux] section applies only to model.family = "flux"; remove it']
            if (cfg.flux is not None)
            else []
        )
        return [
            f"model.{k}: only Flux uses a separate {k} file; remove it for {cfg.model.family}" for k in extra
        ] + flux_section
    return [
        f"model.{k}: Flux needs the {k} file; set model.{k} to its path"
        for k in ("clip_l", "t5xxl", "ae")
        if getattr(cfg.model, k) is None
    ]


def check_v_prediction(cfg: Config) -> list[str]:
    if cfg.model.family == "flux" and cfg.model.v_prediction:
        return ["model.v_prediction: Flux is a flow model and has no v-prediction; remove it"]
    return []


def check_train_parts(cfg: Config) -> list[str]:
    if cfg.network.train_unet_only and cfg.network.train_text_encoder_only:
        return [
            "network.train_unet_only: cannot be combined with network.train_text_encoder_only; keep at most one of them"
        ]
    return []


def check_scheduler(cfg: Config) -> list[str]:
    opt = cfg.optimizer
    problems = []
    if opt.scheduler == "constant" and opt.warmup_percent > 0:
        problems.append(
            "optimizer.warmup_percent: the constant scheduler cannot warm up; set it to 0 "
            'or use scheduler = "constant_with_warmup"'
        )
    if opt.restarts is not None and opt.scheduler != "cosine_with_restarts":
        problems.append(
            "optimizer.restarts: only cosine_with_restarts uses restarts; remove it or set "
            'scheduler = "cosine_with_restarts"'
        )
    return problems


def check_family_options(cfg: Config) -> list[str]:
    """Options a family's script ignores silently are errors here, never passed along."""
    tr, fam = cfg.training, cfg.model.family
    if fam != "flux":
        return []
    ignored = {
        "training.weighted_captions": tr.weighted_captions,
        "training.noise_offset": tr.noise_offset is not None,
        "training.multires_noise_iterations": tr.multires_noise_iterations is not None,
        "training.multires_noise_discount": tr.multires_noise_discount is not None,
        "optimizer.min_snr_gamma": cfg.optimizer.min_snr_gamma is not None,
        "training.clip_skip": tr.clip_skip is not None,
        "training.max_token_length": tr.max_token_length != 75,
        "network.block_dims": cfg.network.block_dims is not None,
        "network.block_alphas": cfg.network.block_alphas is not None,
        "network.block_lr_weights": cfg.network.block_lr_weights is not None,
    }
    return [
        f"{key}: Flux training does not support this setting (sd-scripts would ignore or reject it); remove it"
        for key, is_set in ignored.items()
        if is_set
    ]


def check_text_encoder_cache(cfg: Config) -> list[str]:
    tr = cfg.training
    if not tr.cache_text_encoder_outputs:
        return []
    if cfg.model.family == "sd15":
        return ["training.cache_text_encoder_outputs: only SDXL and Flux can cache text encoder outputs; remove it"]
    problems = []
    if tr.shuffle_tags:
        problems.append(
            "training.shuffle_tags: cached text encoder outputs cannot shuffle tags; set "
            "shuffle_tags = false or cache_text_encoder_outputs = false"
        )
    if cfg.model.family == "sdxl" and not cfg.network.train_unet_only:
        problems.append(
            "training.cache_text_encoder_outputs: SDXL can cache text encoder outputs only "
            "with network.train_unet_only = true"
        )
    if cfg.network.train_text_encoder_only:
        problems.append(
            "training.cache_text_encoder_outputs: cannot train only the text encoder from "
            "cached outputs; turn one of them off"
        )
    return problems


def check_fp8(cfg: Config) -> list[str]:
    problems = []
    if cfg.training.fp8_base and cfg.model.family == "sd15":
        problems.append("training.fp8_base: only SDXL and Flux support fp8 base weights; remove it")
    if cfg.training.fp8_base and cfg.training.mixed_precision == "no":
        problems.append("training.fp8_base: needs mixed_precision fp16 or bf16")
    return problems


def check_block_wise(cfg: Config) -> list[str]:
    net, fam = cfg.network, cfg.model.family
    if fam == "flux":
        return []  # reported by check_family_options
    problems = []
    dims_len = BLOCK_DIMS_LEN[fam]
    if net.block_dims is not None and len(net.block_dims) != dims_len:
        problems.append(f"network.block_dims: {fam} needs {dims_len} values, got {len(net.block_dims)}")
    if net.block_alphas is not None:
        if net.block_dims is None:
            problems.append("network.block_alphas: needs network.block_dims")
        elif len(net.block_alphas) != dims_len:
            problems.append(f"network.block_alphas: {fam} needs {dims_len} values, got {len(net.block_alphas)}")
    weights = net.block_lr_weights
    if weights is not None:
        lengths = dict(zip(("down", "mid", "up"), BLOCK_LR_LEN[fam], strict=True))
        for part, expected in lengths.items():
            value = getattr(weights, part)
            if isinstance(value, list) and len(value) != expected:
                problems.append(f"network.block_lr_weights.{part}: {fam} needs {expected} values, got {len(value)}")
            if isinstance(value, list) and any(v < 0 for v in value):
                problems.append(f"network.block_lr_weights.{part}: weights must be 0 or more")
        if weights.down is None and weights.mid is None and weights.up is None:
            problems.append("network.block_lr_weights: set at least one of down, mid, up")
    if net.conv_alpha is not None and net.conv_dim is None:
        problems.append("network.conv_alpha: needs network.conv_dim")
    return problems


def check_learning_rates(cfg: Config) -> list[str]:
    opt, net = cfg.optimizer, cfg.network
    problems = []
    if net.train_unet_only and opt.unet_lr == 0:
        problems.append("optimizer.unet_lr: is 0 while only the U-Net is trained, so nothing would learn")
    if net.train_text_encoder_only and opt.text_encoder_lr == 0:
        problems.append("optimizer.text_encoder_lr: is 0 while only the text encoder is trained")
    return problems


def check_buckets(cfg: Config) -> list[str]:
    ds = cfg.dataset
    problems = []
    if ds.resolution % 8:
        problems.append(f"dataset.resolution: {ds.resolution} must be a multiple of 8 (64 is best)")
    if ds.enable_bucket:
        if ds.min_bucket_reso > ds.resolution:
            problems.append(
                f"dataset.min_bucket_reso: {ds.min_bucket_reso} is above the resolution {ds.resolution}; lower it"
            )
        if ds.max_bucket_reso < ds.resolution:
            problems.append(
                f"dataset.max_bucket_reso: {ds.max_bucket_reso} is below the resolution {ds.resolution}; raise it"
            )
        for key in ("min_bucket_reso", "max_bucket_reso"):
            if getattr(ds, key) % 64:
                problems.append(f"dataset.{key}: must be a multiple of 64 (the bucket step)")
    if ds.crop == "none" and ds.crop_size is not None:
        problems.append('dataset.crop_size: only used with crop = "center" or "focus"; remove it')
    if not any(not d.is_reg for d in ds.dirs):
        problems.append("dataset.dirs: every folder is is_reg = true; add a folder of training images")
    paths = [d.path for d in ds.dirs]
    for dup in sorted({p for p in paths if paths.count(p) > 1}):
        problems.append(f"dataset.dirs: '{dup}' is listed twice (sd-scripts would skip the second)")
    return problems


def check_sampling(cfg: Config) -> list[str]:
    problems = []
    for i, prompt in enumerate(cfg.sampling.prompts):
        for key in ("text", "negative"):
            if "\n" in getattr(prompt, key) or "\r" in getattr(prompt, key):
                problems.append(f"sampling.prompts.{i}.{key}: must be a single line")
    if cfg.sampling.prompts and cfg.sampling.every_n_epochs > cfg.training.epochs:
        problems.append(
            f"sampling.every_n_epochs: {cfg.sampling.every_n_epochs} is more than training.epochs "
            f"({cfg.training.epochs}), so no samples would be made; lower it or set 0"
        )
    return problems


def check_distributed(cfg: Config) -> list[str]:
    run = cfg.run
    problems = []
    if run.num_machines > 1 and not run.main_process_ip:
        problems.append("run.main_process_ip: a multi-machine run needs the main machine's address")
    if run.machine_rank >= run.num_machines:
        problems.append(f"run.machine_rank: must be below run.num_machines ({run.num_machines})")
    if run.num_processes < run.num_machines:
        problems.append("run.num_processes: counts processes on all machines, so it cannot be below num_machines")
    if isinstance(run.gpu_ids, list):
        if run.num_machines == 1 and len(run.gpu_ids) < run.num_processes:
            problems.append(f"run.gpu_ids: lists {len(run.gpu_ids)} GPUs for {run.num_processes} processes")
        if len(set(run.gpu_ids)) != len(run.gpu_ids) or any(g < 0 for g in run.gpu_ids):
            problems.append("run.gpu_ids: must be distinct GPU indices (0, 1, …)")
    return problems


# sd-scripts arguments that would replace or bypass the files kohya_wrap renders for it.
_FILE_ARGS = {
    "config_file": "it would replace the train.toml kohya_wrap renders from this config",
    "dataset_config": "it would replace the dataset.toml kohya_wrap renders from [dataset]",
    "output_config": "sd-scripts would only write its config (refusing, as train.toml exists) and not train",
    "dataset_class": "it would bypass the dataset.toml kohya_wrap renders from [dataset]",
    "train_data_dir": "sd-scripts ignores it next to the dataset.toml kohya_wrap renders; use dataset.dirs",
    "reg_data_dir": "sd-scripts ignores it next to the dataset.toml kohya_wrap renders; use dataset.dirs with "
    "is_reg = true",
    "in_json": "sd-scripts ignores it next to the dataset.toml kohya_wrap renders",
}


def check_extra_args(cfg: Config) -> list[str]:
    # sd-scripts reuses `*.npz` caches beside the images by key presence only, so after re-tagging or
    # editing images it silently trains on stale latents/captions; we cache in memory, per run.
    stale = [
        f"run.extra_args.{key}: disk caches beside the images go stale after re-tagging or image edits "
        "and sd-scripts reuses them anyway; remove it (kohya_wrap caches in memory, per run)"
        for key in ("cache_latents_to_disk", "cache_text_encoder_outputs_to_disk")
        if key in cfg.run.extra_args
    ]
    files = [f"run.extra_args.{key}: {why}; remove it" for key, why in _FILE_ARGS.items() if key in cfg.run.extra_args]
    return stale + files


ERROR_CHECKS: tuple[Check, ...] = (
    check_variant,
    check_flux_files,
    check_v_prediction,
    check_train_parts,
    check_scheduler,
    check_family_options,
    check_text_encoder_cache,
    check_fp8,
    check_block_wise,
    check_learning_rates,
    check_buckets,
    check_sampling,
    check_distributed,
    check_extra_args,
)


# ---- warnings: SeaArt's advice and quiet traps ---------------------------------------------------


def check_alpha_vs_dim(cfg: Config) -> list[str]:
    net = cfg.network
    if net.alpha > net.dim:
        return [
            f"network.alpha: {net.alpha:g} is above dim {net.dim}, which scales updates up; SeaArt advises "
            f"alpha ≤ dim, commonly dim / 2 = {net.dim / 2:g}"
        ]
    return []


def check_adaptive_lr(cfg: Config) -> list[str]:
    opt = cfg.optimizer
    if opt.type not in ADAPTIVE_OPTIMIZERS:
        return []
    messages = []
    lrs = {"learning_rate": opt.learning_rate, "unet_lr": opt.unet_lr, "text_encoder_lr": opt.text_encoder_lr}
    for key, lr in lrs.items():
        if lr is not None and lr != 1.0:
            messages.append(f"optimizer.{key}: {opt.type} finds its own step size and wants 1.0, not {lr:g}")
    if opt.unet_lr is not None and opt.text_encoder_lr is not None and opt.unet_lr != opt.text_encoder_lr:
        messages.append(
            f"optimizer.text_encoder_lr: {opt.type} uses only the first LR group, so separate "
            "U-Net and text encoder LRs are not honoured"
        )
    return messages


def check_clip_skip(cfg: Config) -> list[str]:
    tr, fam, variant = cfg.training, cfg.model.family, cfg.model.variant
    if fam == "sd15" and tr.clip_skip != 2:
        return [f"training.clip_skip: {tr.clip_skip} on SD1.5; SeaArt advises 2 (anime models are trained with it)"]
    if fam == "sdxl" and tr.clip_skip != 1 and variant != "pony":
        return [
            f"training.clip_skip: {tr.clip_skip} on SDXL; SDXL training ignores it (only samples use it), "
            "SeaArt advises 1"
        ]
    return []


def check_precision(cfg: Config) -> list[str]:
    if cfg.training.mixed_precision == "fp16" and cfg.model.family in ("sdxl", "flux"):
        return [
            f"training.mixed_precision: fp16 on {cfg.model.family} risks NaN loss and black samples; "
            "use bf16 where the GPU supports it"
        ]
    return []


def check_batch_size(cfg: Config) -> list[str]:
    bs = cfg.training.batch_size
    if bs >= 8:
        return [
            f"training.batch_size: {bs} averages features across many images and needs much more VRAM; "
            "SeaArt advises starting at 2"
        ]
    return []


def check_unused_learning_rates(cfg: Config) -> list[str]:
    opt, net = cfg.optimizer, cfg.network
    messages = []
    if net.train_unet_only and opt.text_encoder_lr is not None:
        messages.append("optimizer.text_encoder_lr: ignored because network.train_unet_only = true")
    if net.train_text_encoder_only and opt.unet_lr is not None:
        messages.append("optimizer.unet_lr: ignored because network.train_text_encoder_only = true")
    if opt.type == "Adafactor" and "relative_step" in opt.args and opt.args["relative_step"] is True:
        messages.append(
            "optimizer.args: Adafactor with relative_step = true ignores learning_rate, unet_lr, "
            "text_encoder_lr and the scheduler"
        )
    return messages


def check_noise(cfg: Config) -> list[str]:
    tr = cfg.training
    if tr.multires_noise_discount is not None and tr.multires_noise_iterations is None:
        return ["training.multires_noise_discount: has no effect without multires_noise_iterations"]
    return []


def check_captions(cfg: Config) -> list[str]:
    tr, trigger = cfg.training, cfg.tagging.trigger_word
    messages = []
    if trigger and tr.shuffle_tags and tr.keep_tokens == 0:
        messages.append(
            f"training.keep_tokens: 0 lets shuffling move the trigger word '{trigger}' away from "
            "the front; set keep_tokens = 1"
        )
    if trigger and cfg.sampling.prompts and not any(trigger in p.text for p in cfg.sampling.prompts):
        messages.append(
            f"sampling.prompts: no prompt contains the trigger word '{trigger}', so the samples "
            "will not show what the LoRA learned"
        )
    return messages


def check_family_quirks(cfg: Config) -> list[str]:
    messages = []
    if cfg.model.family == "flux" and cfg.training.attention != "sdpa":
        messages.append("training.attention: Flux training ignores the attention setting")
    if cfg.optimizer.type == "DAdaptation" or cfg.optimizer.type == "DAdaptAdam":
        messages.append(
            f"optimizer.type: {cfg.optimizer.type} needs the 'dadaptation' package, which "
            "sd-scripts does not install; run `pip install dadaptation` in its interpreter"
        )
    if cfg.save.every_n_epochs >= cfg.training.epochs and cfg.training.epochs > 1:
        messages.append(
            f"save.every_n_epochs: {cfg.save.every_n_epochs} with {cfg.training.epochs} epochs "
            "saves only the last epoch, so there is nothing to compare"
        )
    if cfg.model.family == "sdxl" and cfg.model.v_prediction and cfg.model.variant not in ("noobai-vpred",):
        messages.append(
            "model.v_prediction: set only for v-prediction checkpoints; an eps model trained as "
            "v-prediction learns noise"
        )
    return messages


def check_validation(cfg: Config) -> list[str]:
    val, epochs = cfg.validation, cfg.training.epochs
    if val.split == 0:
        unused = [
            f"validation.{key}"
            for key, default in (("every_n_epochs", 1), ("max_batches", None))
            if getattr(val, key) != default
        ]
        return [f"{key}: has no effect while validation.split is 0" for key in unused]
    # Only an epoch that is both validated and saved (every Nth, and the last) can be suggested.
    saved = {e for e in range(1, epochs + 1) if e % cfg.save.every_n_epochs == 0 or e == epochs}
    both = sorted(e for e in saved if e % val.every_n_epochs == 0)
    if len(both) < 2 <= len(saved):  # with fewer saved epochs, check_family_quirks already says so
        which = f"only epoch {both[0]} is" if both else "no epoch is"
        return [
            f"validation.every_n_epochs: {which} both validated and saved (save.every_n_epochs = "
            f"{cfg.save.every_n_epochs}, {epochs} epochs), so validation loss has no epochs to choose between; "
            "make it a divisor of save.every_n_epochs"
        ]
    return []


WARNING_CHECKS: tuple[Check, ...] = (
    check_alpha_vs_dim,
    check_adaptive_lr,
    check_clip_skip,
    check_precision,
    check_batch_size,
    check_unused_learning_rates,
    check_noise,
    check_captions,
    check_family_quirks,
    check_validation,
)
