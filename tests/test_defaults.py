"""Tests for kohya_wrap.config.defaults: `resolve` fills every family/variant default, and only those."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from kohya_wrap.config.defaults import default_output_name, folder_repeats_and_class, resolve
from kohya_wrap.config.models import Config, Settings


def settings(family: str = "sd15", **sections: dict[str, Any]) -> Settings:
    doc: dict[str, Any] = {
        "model": {"family": family, "base": "/m/base.safetensors"},
        "dataset": {"dirs": [{"path": "/data/20_zdm 1boy"}]},
    }
    if family == "flux":
        doc["model"].update(clip_l="/m/clip_l.safetensors", t5xxl="/m/t5.safetensors", ae="/m/ae.safetensors")
    for name, values in sections.items():
        doc[name] = {**doc.get(name, {}), **values}
    return Settings.model_validate(doc)


def narrowed_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    """The fields whose resolved type has no None, walked into the resolved sections."""
    names = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += narrowed_fields(annotation, f"{prefix}{name}.")
        elif type(None) not in typing.get_args(annotation):
            names.append(prefix + name)
    return names


@pytest.mark.parametrize("family", ["sd15", "sdxl", "flux"])
def test_resolved_defaults_are_never_none(family: str) -> None:
    cfg = resolve(settings(family))
    assert isinstance(cfg, Config)
    narrowed = narrowed_fields(Config)
    for defaulted in ("model.variant", "model.v_prediction", "dataset.resolution", "dataset.min_bucket_reso"):
        assert defaulted in narrowed
    for defaulted in ("training.mixed_precision", "training.gradient_checkpointing", "network.alpha"):
        assert defaulted in narrowed
    assert "save.output_name" in narrowed and "training.clip_skip" not in narrowed  # None on Flux
    for dotted in narrowed:
        value: Any = cfg
        for part in dotted.split("."):
            value = getattr(value, part)
        assert value is not None, dotted
    assert all(d.repeats is not None for d in cfg.dataset.dirs)


def test_the_input_keeps_unset_values_unset() -> None:
    given = settings()
    assert (given.dataset.resolution, given.training.mixed_precision, given.network.alpha) == (None, None, None)
    resolve(given)  # resolving builds a new Config; the settings stay as the user wrote them
    assert (given.dataset.resolution, given.training.mixed_precision, given.network.alpha) == (None, None, None)


def test_family_then_variant_then_user() -> None:
    pony = resolve(settings("sdxl", model={"variant": "pony"}))
    assert (pony.dataset.resolution, pony.training.clip_skip, pony.training.mixed_precision) == (1024, 2, "bf16")
    vpred = resolve(settings("sdxl", model={"variant": "noobai-vpred"}))
    assert vpred.model.v_prediction is True
    mine = resolve(settings("sdxl", model={"variant": "pony"}, training={"clip_skip": 1, "mixed_precision": "fp16"}))
    assert (mine.training.clip_skip, mine.training.mixed_precision) == (1, "fp16")


def test_derived_defaults_follow_the_values_they_come_from() -> None:
    cfg = resolve(
        settings(
            dataset={"resolution": 768, "crop": "center"},
            network={"dim": 32, "conv_dim": 8},
            optimizer={"scheduler": "cosine_with_restarts"},
        )
    )
    assert (cfg.dataset.min_bucket_reso, cfg.dataset.max_bucket_reso, cfg.dataset.crop_size) == (256, 1024, 768)
    assert (cfg.network.alpha, cfg.network.conv_alpha, cfg.optimizer.restarts) == (16.0, 4.0, 1)
    plain = resolve(settings(optimizer={"scheduler": "cosine"}))
    assert (plain.dataset.crop_size, plain.network.conv_alpha, plain.optimizer.restarts, plain.flux) == (
        None,
        None,
        None,
        None,
    )
    assert resolve(settings("flux")).flux is not None


def test_folder_names_give_repeats_class_and_the_lora_name(tmp_path: Path) -> None:
    assert folder_repeats_and_class("/data/20_zdm 1boy/") == (20, "zdm 1boy")
    assert folder_repeats_and_class("/data/zdm") == (None, None)
    cfg = resolve(settings())
    assert (cfg.dataset.dirs[0].repeats, cfg.dataset.dirs[0].class_token, cfg.output_name) == (20, "zdm 1boy", "zdm")
    odd = settings(dataset={"dirs": [{"path": "/data/..my set!"}]})
    assert default_output_name(odd) == "my_set"
