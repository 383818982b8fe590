"""What an importer builds: our config document, and the fate of every key of the file it read."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Literal

import tomli_w

from kohya_wrap.train import sd_args

# mapped: carried into our config · extra: into run.extra_args (an sd-scripts option we have no setting for)
# same: what kohya_wrap always does anyway · unset: the value means "not set" · ignored: no effect on the
# training (the other tool's own bookkeeping, or a path kohya_wrap chooses) · dropped: a setting we cannot
# carry · secret: a credential, never written.
Kind = Literal["mapped", "extra", "same", "unset", "ignored", "dropped", "secret"]
NOT_CARRIED: frozenset[Kind] = frozenset({"dropped", "secret"})
SECRET_WORDS = ("api_key", "apikey", "password", "secret")
PATH_TARGETS = ("model.base", "model.vae", "model.clip_l", "model.t5xxl", "model.ae", "model.tokenizer_cache_dir")
_WINDOWS_PATH = re.compile(r"^[A-Za-z]:[\\/]|\\")
# Keys render writes into the training TOML itself; run.extra_args may not set them (render refuses).
OWNED_BY_RENDER = frozenset(
    {
        "pretrained_model_name_or_path", "vae", "tokenizer_cache_dir", "clip_l", "t5xxl", "ae",
        "v_parameterization", "zero_terminal_snr", "guidance_scale", "timestep_sampling", "model_prediction_type",
        "discrete_flow_shift", "apply_t5_attn_mask", "blocks_to_swap", "fp8_base", "network_module",
        "network_dim", "network_alpha", "network_args", "network_train_unet_only",
        "network_train_text_encoder_only", "optimizer_type", "learning_rate", "optimizer_args", "unet_lr",
        "text_encoder_lr", "lr_scheduler", "lr_warmup_steps", "lr_scheduler_num_cycles", "min_snr_gamma",
        "max_train_epochs", "max_train_steps", "mixed_precision", "seed", "gradient_checkpointing",
        "cache_latents", "clip_skip", "weighted_captions", "max_token_length", "noise_offset",
        "multires_noise_iterations", "multires_noise_discount", "cache_text_encoder_outputs", "sdpa", "xformers",
        "max_data_loader_n_workers", "persistent_data_loader_workers", "output_dir", "output_name",
        "save_model_as", "save_precision", "save_every_n_epochs", "save_state", "training_comment",
        "metadata_title", "metadata_trigger_phrase", "dataset_config", "sample_prompts", "sample_every_n_epochs",
        "sample_sampler", "logging_dir", "log_with", "console_log_simple", "caption_extension", "shuffle_caption",
        "keep_tokens", "resolution", "batch_size", "train_batch_size", "enable_bucket", "min_bucket_reso",
        "max_bucket_reso", "bucket_reso_steps", "validation_split", "validation_seed", "validate_every_n_epochs",
        "max_validation_steps",
    }
)  # fmt: skip
# Disk caches are refused by the config checks (they go stale); say so at import time already.
REFUSED_EXTRA = {
    "cache_latents_to_disk": "disk caches beside the images go stale after re-tagging; kohya_wrap caches in memory",
    "cache_text_encoder_outputs_to_disk": "disk caches go stale after re-tagging; kohya_wrap caches in memory",
}


@dataclass(frozen=True)
class KeyFate:
    """What became of one key of the imported file."""

    key: str
    kind: Kind
    target: str = ""
    reason: str = ""

    def describe(self) -> str:
        """One line for the user: `key → section.key`, or why it was not carried."""
        if self.kind in ("mapped", "extra"):
            return f"{self.key} → {self.target}" + (f" ({self.reason})" if self.reason else "")
        if self.kind == "secret":
            return f"{self.key}: secret, dropped (never written)"
        label = {"same": "same in kohya_wrap", "unset": "unset", "ignored": "ignored", "dropped": "NOT CARRIED"}
        return f"{self.key}: {label[self.kind]}: {self.reason}"


@dataclass(frozen=True)
class Imported:
    """Our config document read from another tool's file, with the fate of every key it held."""

    source: Path
    format: str
    doc: dict[str, Any]
    fates: tuple[KeyFate, ...]
    notes: tuple[str, ...]
    origins: dict[str, str]  # dotted target → where its value came from

    @property
    def not_carried(self) -> tuple[KeyFate, ...]:
        """Keys whose setting is lost: dropped settings and secrets."""
        return tuple(f for f in self.fates if f.kind in NOT_CARRIED)


@dataclass
class Draft:
    """An import in progress: set targets, record fates; `finish` checks the extra arguments."""

    format: str
    source: Path
    doc: dict[str, Any] = field(default_factory=dict)
    fates: list[KeyFate] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    origins: dict[str, str] = field(default_factory=dict)
    extras: dict[str, tuple[str, Any]] = field(default_factory=dict)  # sd-scripts key → (input key, value)

    def put(self, target: str, value: Any, key: str, reason: str = "", origin: str | None = None) -> None:
        """Set `target` (dotted) to `value`, recording `key` as mapped onto it."""
        self.set_value(target, value, origin if origin is not None else key)
        self.fates.append(KeyFate(key, "mapped", target, reason))

    def set_value(self, target: str, value: Any, origin: str) -> None:
        """Set `target` without a fate (a value implied by the file, e.g. an sd-scripts default)."""
        *path, last = target.split(".")
        node = self.doc
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
        self.origins[target] = origin
        if target in PATH_TARGETS and isinstance(value, str):
            self.check_path(target, value)
        if target == "dataset.dirs" and isinstance(value, list):
            for entry in value:
                self.check_path(target, str(entry.get("path", "")))

    def check_path(self, target: str, path: str) -> None:
        """Flag paths that will not work here as written: Windows paths, and relative ones."""
        note = ""
        if _WINDOWS_PATH.search(path):
            note = f"{target}: {path!r} is a Windows path; change it to where it is on this machine"
        elif not path.startswith(("/", "~")) and (target == "dataset.dirs" or PurePath(path).suffix):
            note = f"{target}: {path!r} is relative; kohya_wrap reads it from the folder of the config file"
        if note and note not in self.notes:
            self.notes.append(note)

    def get(self, target: str, default: Any = None) -> Any:
        node: Any = self.doc
        for part in target.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def has(self, target: str) -> bool:
        return self.get(target, _MISSING) is not _MISSING

    def extra(self, name: str, value: Any, key: str) -> None:
        """An sd-scripts option we have no setting for: run.extra_args, once checked in `finish`."""
        if name in REFUSED_EXTRA:
            self.drop(key, REFUSED_EXTRA[name])
            return
        self.extras[name] = (key, value)
        self.fates.append(KeyFate(key, "extra", f"run.extra_args.{name}"))

    def mark(self, key: str, kind: Kind, reason: str) -> None:
        self.fates.append(KeyFate(key, kind, reason=reason))

    def drop(self, key: str, reason: str) -> None:
        self.fates.append(KeyFate(key, "dropped", reason=reason))

    def secret(self, key: str) -> None:
        self.fates.append(KeyFate(key, "secret"))

    def finish(self, family: str | None, order: list[str] | None = None) -> Imported:
        """Check each extra argument against the sd-scripts spec of the family's script, then freeze (fates in
        the file's key `order` when given)."""
        if self.extras:
            script = sd_args.SCRIPT_BY_FAMILY.get(family or "sd15", "train_network.py")
            options = sd_args.load_spec().options(script)
            for name, (key, value) in self.extras.items():
                problems = sd_args.check_training_args(script, {name: value})
                if name in OWNED_BY_RENDER:
                    problems = ["kohya_wrap sets it from its own settings"]
                elif name not in options:
                    problems = [f"not an option of {script}"]
                if problems:
                    index = next(i for i, f in enumerate(self.fates) if f.key == key and f.kind == "extra")
                    self.fates[index] = KeyFate(key, "dropped", reason=problems[0])
                    continue
                self.doc.setdefault("run", {}).setdefault("extra_args", {})[name] = value
                self.origins[f"run.extra_args.{name}"] = key
        fates = self.fates
        if order is not None:
            rank = {key: i for i, key in enumerate(order)}
            fates = sorted(fates, key=lambda f: rank.get(f.key.partition(":")[0], len(rank)))
        return Imported(self.source, self.format, self.doc, tuple(fates), tuple(self.notes), dict(self.origins))


_MISSING = object()


def is_secret(key: str) -> bool:
    """Credentials: `huggingface_token`, `wandb_api_key`, `token`, passwords (not `keep_tokens`)."""
    lowered = key.lower()
    return lowered == "token" or lowered.endswith("_token") or any(word in lowered for word in SECRET_WORDS)


# ---- our config as commented TOML ------------------------------------------------------------------

SECTION_ORDER = ("model", "dataset", "tagging", "network", "optimizer", "training", "flux", "sampling", "save",
                 "validation", "run")  # fmt: skip


def _value(value: Any) -> str:
    return tomli_w.dumps({"v": value}).removeprefix("v = ").rstrip("\n")


def config_toml(imported: Imported, header: str) -> str:
    """Our config file: one table per section, each value commented with the key it came from; the keys
    that were not carried listed at the end.

    Values are written by tomli_w, not by render's writer: that one escapes quotes, commas and brackets as
    \\uXXXX for sd-scripts' old TOML reader, which a person editing this file should not have to read.
    """
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]

    def table(path: tuple[str, ...], body: dict[str, Any], array: bool = False) -> None:
        dotted = ".".join(path)
        lines.extend(["", f"[[{dotted}]]" if array else f"[{dotted}]"])
        nested = []
        fields = field_order(path)
        for key, value in sorted(body.items(), key=lambda item: fields.get(item[0], len(fields))):
            if isinstance(value, dict) or (isinstance(value, list) and value and isinstance(value[0], dict)):
                nested.append((key, value))
                continue
            text = f"{key} = {_value(value)}"
            origin = imported.origins.get(f"{dotted}.{key}")
            lines.append(f"{text}  # {origin}" if origin and not array else text)
        for key, value in nested:
            if isinstance(value, dict):
                table((*path, key), value)
            else:
                origin = imported.origins.get(f"{dotted}.{key}")
                if origin:
                    lines.extend(["", f"# {key}: {origin}"])
                for item in value:
                    table((*path, key), item, array=True)

    scalars = {k: v for k, v in imported.doc.items() if not isinstance(v, dict)}
    if scalars:
        lines.append("")
        lines.extend(f"{k} = {_value(v)}" for k, v in scalars.items())
    for section in sorted((k for k, v in imported.doc.items() if isinstance(v, dict)), key=_section_rank):
        table((section,), imported.doc[section])
    lost = imported.not_carried
    if lost:
        lines.extend(["", f"# Not carried over from {imported.source.name}:"])
        lines.extend(f"#   {fate.describe()}" for fate in lost)
    return "\n".join(lines) + "\n"


def field_order(path: tuple[str, ...]) -> dict[str, int]:
    """Our settings' field order for the table at `path` (e.g. ("dataset", "dirs")), so files read as documented."""
    from pydantic import BaseModel

    from kohya_wrap.config.models import Settings

    model: Any = Settings
    for part in path:
        field_info = model.model_fields.get(part)
        if field_info is None:
            return {}
        model = _model_in(field_info.annotation)
        if model is None or not (isinstance(model, type) and issubclass(model, BaseModel)):
            return {}
    names: dict[str, Any] = model.model_fields
    return {name: i for i, name in enumerate(names)}


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _section_rank(name: str) -> int:
    return SECTION_ORDER.index(name) if name in SECTION_ORDER else len(SECTION_ORDER)
