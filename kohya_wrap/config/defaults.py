"""Family and variant defaults: `resolve` turns checked `Settings` into a `Config` with every default filled."""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import Any, TypeVar

from pydantic import BaseModel

from kohya_wrap.config.models import (
    Config,
    FluxSettings,
    OptimizerSettings,
    ResolvedDataset,
    ResolvedDir,
    ResolvedModel,
    ResolvedNetwork,
    ResolvedSave,
    ResolvedTraining,
    ResolvedValidation,
    Settings,
)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

# Family and variant defaults, applied only where the user left a value unset.
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "sd15": {
        "variant": "base",
        "resolution": 512,
        "clip_skip": 2,
        "max_bucket_reso": 1024,
        "gradient_checkpointing": False,
        "mixed_precision": "fp16",
    },
    "sdxl": {
        "variant": "base",
        "resolution": 1024,
        "clip_skip": 1,
        "max_bucket_reso": 2048,
        "gradient_checkpointing": True,
        "mixed_precision": "bf16",
    },
    "flux": {
        "variant": "dev",
        "resolution": 1024,
        "clip_skip": None,
        "max_bucket_reso": 2048,
        "gradient_checkpointing": True,
        "mixed_precision": "bf16",
    },
}
VARIANT_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "sd15": {"base": {}},
    "sdxl": {
        "base": {},
        # Pony models are trained and used with CLIP skip 2; SDXL training ignores it, samples use it.
        "pony": {"clip_skip": 2},
        "illustrious": {},
        "noobai": {},
        "noobai-vpred": {"v_prediction": True},
    },
    "flux": {"dev": {}, "schnell": {}},
}


def folder_repeats_and_class(path: str) -> tuple[int | None, str | None]:
    """Read kohya-style `<repeats>_<class words>` folder names (e.g. `20_zdm 1boy` → 20, "zdm 1boy")."""
    name = PurePath(path.rstrip("/\\")).name
    head, sep, rest = name.partition("_")
    if sep and head.isdigit() and rest.strip():
        return int(head), rest.strip()
    return None, None


def resolve(settings: Settings) -> Config:
    """Fill unset values from the family, then the variant; values the user set are never touched.

    The settings were validated field by field already, and every default below is valid by construction,
    so the resolved models are built without validating again (their schemas are never built on this path).
    """
    family = FAMILY_DEFAULTS[settings.model.family]
    variant = settings.model.variant if settings.model.variant is not None else family["variant"]
    merged = {**family, **VARIANT_DEFAULTS[settings.model.family].get(variant, {})}
    model = _update(
        settings.model,
        ResolvedModel,
        variant=variant,
        v_prediction=_given(settings.model.v_prediction, bool(merged.get("v_prediction", False))),
    )
    ds = settings.dataset
    resolution: int = _given(ds.resolution, merged["resolution"])
    dirs = []
    for d in ds.dirs:
        repeats, class_token = folder_repeats_and_class(d.path)
        found = {"repeats": _given(d.repeats, repeats or 1), "class_token": _given(d.class_token, class_token)}
        dirs.append(_update(d, ResolvedDir, **found))
    dataset = _update(
        ds,
        ResolvedDataset,
        dirs=dirs,
        resolution=resolution,
        min_bucket_reso=_given(ds.min_bucket_reso, min(256, resolution // 64 * 64 or 64)),
        max_bucket_reso=_given(ds.max_bucket_reso, max(merged["max_bucket_reso"], resolution)),
        crop_size=ds.crop_size if ds.crop == "none" else _given(ds.crop_size, resolution),
    )
    tr, net, opt = settings.training, settings.network, settings.optimizer
    training = _update(
        tr,
        ResolvedTraining,
        clip_skip=_given(tr.clip_skip, merged["clip_skip"]),
        mixed_precision=_given(tr.mixed_precision, merged["mixed_precision"]),
        gradient_checkpointing=_given(tr.gradient_checkpointing, merged["gradient_checkpointing"]),
    )
    conv_alpha = net.conv_alpha if net.conv_dim is None else _given(net.conv_alpha, net.conv_dim / 2)
    network = _update(net, ResolvedNetwork, alpha=_given(net.alpha, net.dim / 2), conv_alpha=conv_alpha)
    restarts = opt.restarts if opt.scheduler != "cosine_with_restarts" else _given(opt.restarts, 1)
    flux = settings.flux
    if settings.model.family == "flux" and flux is None:
        flux = FluxSettings()
    output_name = _given(settings.save.output_name, default_output_name(settings))
    save = _update(settings.save, ResolvedSave, output_name=output_name)
    # sd-scripts shuffles each folder before the split with this seed; without one, its training and
    # validation sets come from two different shuffles and share images.
    validation = _update(settings.validation, ResolvedValidation, seed=_given(settings.validation.seed, tr.seed))
    return _update(
        settings,
        Config,
        model=model,
        dataset=dataset,
        training=training,
        network=network,
        optimizer=_update(opt, OptimizerSettings, restarts=restarts),
        flux=flux,
        save=save,
        validation=validation,
    )


def _given(value: T | None, default: T) -> T:
    """The user's value where set, else the default."""
    return default if value is None else value


def _update(section: BaseModel, resolved: type[M], **values: object) -> M:
    """`section`'s fields (nested models kept as they are), with `values` replacing some, as a `resolved`."""
    return resolved.model_construct(**{**dict(section), **values})


def default_output_name(settings: Settings) -> str:
    """The LoRA name SeaArt would use: the dataset's name (first training folder, repeats prefix dropped)."""
    first = next((d for d in settings.dataset.dirs if not d.is_reg), settings.dataset.dirs[0])
    name = PurePath(first.path.rstrip("/\\")).name
    _, class_token = folder_repeats_and_class(first.path)
    if class_token:
        name = class_token.split()[0]
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")
    return cleaned[:100] or "lora"
