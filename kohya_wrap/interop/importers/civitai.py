"""Civitai's trainer settings (its `trainingDetails`: type, baseModel, params, samplePrompts; or bare params)."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

from kohya_wrap.config.models import Optimizer
from kohya_wrap.errors import ConfigError
from kohya_wrap.interop.importers import sd_scripts as sd
from kohya_wrap.interop.importers.draft import Draft, Imported, is_secret

# Civitai's base models: (family, variant); its SD1.5 and SDXL stock models are named, not files.
BASE_MODELS: dict[str, tuple[str, str | None]] = {
    "sd_1_5": ("sd15", None),
    "anime": ("sd15", None),
    "semi": ("sd15", None),
    "realistic": ("sd15", None),
    "sdxl": ("sdxl", None),
    "pony": ("sdxl", "pony"),
    "illustrious": ("sdxl", "illustrious"),
    "flux_dev": ("flux", "dev"),
}
BASE_MODEL_TYPES = {"sd15": "sd15", "sd_1_5": "sd15", "sdxl": "sdxl", "flux": "flux", "flux_dev": "flux"}
DIRECT = {
    "networkDim": "network.dim",
    "maxTrainEpochs": "training.epochs",
    "epochs": "training.epochs",
    "resolution": "dataset.resolution",
    "enableBucket": "dataset.enable_bucket",
    "keepTokens": "training.keep_tokens",
    "trainBatchSize": "training.batch_size",
    "batchSize": "training.batch_size",
    "shuffleCaption": "training.shuffle_tags",
    "shuffleTokens": "training.shuffle_tags",
}
FLOATS = {
    "networkAlpha": "network.alpha",
    "minSnrGamma": "optimizer.min_snr_gamma",
    "noiseOffset": "training.noise_offset",
}
NOT_FOR_FLUX = {"clipSkip", "noiseOffset", "minSnrGamma"}
IGNORED = {
    "targetSteps": "Civitai's step estimate; kohya_wrap counts steps from the epochs",
    "steps": "Civitai's step count; kohya_wrap trains by epochs",
    "engine": "Civitai's choice of trainer",
    "saveEvery": "a Civitai page setting",
    "sampleStrength": "a Civitai sample setting",
    "loraType": "kohya_wrap trains LoRA",
    "ecosystem": "Civitai's model family label (read from baseModel)",
    "modelVariant": "Civitai's model variant label",
}


def read_civitai(path: Path, doc: dict[str, Any]) -> Imported:
    """Civitai trainer settings, wrapped ({"type", "baseModel", "params", "samplePrompts"}) or bare params."""
    wrapped = isinstance(doc.get("params"), dict)
    params: dict[str, Any] = doc["params"] if wrapped else doc
    draft = Draft("Civitai trainer settings", path)
    family = None
    if wrapped:
        family = _base_model(draft, doc, path)
        for key, value in doc.items():
            if key in ("baseModel", "baseModelType", "params", "samplePrompts"):
                continue
            if key == "type":
                draft.mark(key, "ignored", f"Civitai's label for the LoRA ({value})")
            elif is_secret(key):
                draft.secret(key)
            else:
                draft.drop(key, "not a Civitai training setting kohya_wrap knows")
    if family is None:
        draft.notes.append("model.family: Civitai's bare params do not name the model; set model.family and model.base")
    family_name = family or "sd15"
    unet_lr = params.get("unetLR", params.get("lr"))
    for key, value in params.items():
        where = f"params.{key}" if wrapped else key
        if is_secret(key):
            draft.secret(where)
        elif key in IGNORED:
            draft.mark(where, "ignored", IGNORED[key])
        elif key in NOT_FOR_FLUX and family == "flux":
            if value in (None, 0):
                draft.mark(where, "unset", "0")
            else:
                draft.drop(where, "Flux training does not support it")
        elif key in DIRECT:
            draft.put(DIRECT[key], value, where) if value is not None else draft.mark(where, "unset", "null")
        elif key in FLOATS:
            if value in (None, 0):
                draft.mark(where, "unset", "0")
            else:
                draft.put(FLOATS[key], float(value), where)
        elif key in ("unetLR", "lr"):
            draft.put("optimizer.unet_lr", float(value), where)
            draft.set_value("optimizer.learning_rate", float(value), f"{where} (also the base learning rate)")
        elif key in ("textEncoderLR", "textEncoderLr"):
            if value in (None, 0):
                draft.put("network.train_unet_only", True, where, "0: the text encoder is not trained")
            elif unet_lr == 0:
                draft.put("network.train_text_encoder_only", True, where)
                draft.set_value("optimizer.text_encoder_lr", float(value), where)
            else:
                draft.put("optimizer.text_encoder_lr", float(value), where)
        elif key == "trainTextEncoder":
            if value is False:
                draft.put("network.train_unet_only", True, where)
            else:
                draft.mark(where, "same", "kohya_wrap trains the text encoder unless told not to")
        elif key == "optimizerType":
            chosen = sd.canonical(typing.get_args(Optimizer), value)
            if chosen is None:
                draft.drop(where, f"optimizer {value!r} is not one of {', '.join(typing.get_args(Optimizer))}")
            else:
                draft.put("optimizer.type", chosen, where)
        elif key == "optimizerArgs":
            text = str(value or "").strip()
            if not text:
                draft.mark(where, "unset", "empty")
            for arg, arg_value in sd.parse_arg_list(text.split(), where, draft).items():
                arg_value = [float(v) for v in arg_value] if isinstance(arg_value, tuple) else arg_value
                draft.put(f"optimizer.args.{arg}", arg_value, f"{where}: {arg}")
        elif key == "lrScheduler":
            draft.put("optimizer.scheduler", value, where)
        elif key == "lrSchedulerNumCycles":
            if params.get("lrScheduler") == "cosine_with_restarts":
                draft.put("optimizer.restarts", value, where)
            else:
                draft.mark(where, "ignored", "only cosine_with_restarts uses it")
        elif key == "clipSkip":
            draft.put("training.clip_skip", value, where) if value else draft.mark(where, "unset", "0")
        elif key == "flipAugmentation":
            draft.extra("flip_aug", True, where) if value else draft.mark(where, "unset", "false")
        elif key == "numRepeats":
            draft.drop(where, f"Civitai's dataset is not here: set repeats = {value} on your folder in dataset.dirs")
        elif key == "continueFrom":
            draft.drop(where, "a Civitai model to continue from; kohya_wrap starts from model.base")
        elif key == "sampleCfgScale":
            draft.mark(where, "mapped", "sampling.prompts.*.cfg")
        else:
            draft.drop(where, "not a Civitai training setting kohya_wrap knows")
    prompts = doc.get("samplePrompts") if wrapped else None
    if isinstance(prompts, list):
        cfg = params.get("sampleCfgScale")
        entries = [{"text": p} | ({"cfg": float(cfg)} if cfg is not None else {}) for p in prompts if str(p).strip()]
        if entries:
            draft.put("sampling.prompts", entries, "samplePrompts", f"{len(entries)} prompt(s)")
        else:
            draft.mark("samplePrompts", "unset", "empty")
    return draft.finish(family_name)


def _base_model(draft: Draft, doc: dict[str, Any], path: Path) -> str | None:
    base = doc.get("baseModel")
    base_type = doc.get("baseModelType")
    if isinstance(base, str) and base in BASE_MODELS:
        family, variant = BASE_MODELS[base]
        draft.put("model.family", family, "baseModel")
        if variant is not None:
            draft.set_value("model.variant", variant, f"baseModel ({base})")
        draft.notes.append(f"model.base: Civitai trained on its '{base}' model; set model.base to your checkpoint")
        if base_type is not None:
            draft.mark("baseModelType", "ignored", "read from baseModel")
        return family
    if isinstance(base_type, str) and base_type in BASE_MODEL_TYPES:
        family = BASE_MODEL_TYPES[base_type]
        draft.put("model.family", family, "baseModelType")
        draft.drop("baseModel", f"a Civitai model ({base}); set model.base to the checkpoint file")
        return family
    raise ConfigError(
        f"import: {path.name} trains Civitai's {base!r} model, which is not SD1.5, SDXL or Flux.1-dev; "
        "kohya_wrap cannot train it"
    )
