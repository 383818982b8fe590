"""Smoke tests of the e2e assets that the real sd-scripts runs use (built once, then cached)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from PIL import Image

if TYPE_CHECKING:
    from conftest import E2EAssets

# What OpenAI's CLIP tokenizer gives; a wrong BPE derivation would change these ids.
CAT_PROMPT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]


def read_config(folder: Path) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return config


@pytest.mark.sd_scripts
def test_e2e_assets_are_what_sd_scripts_expects(e2e_assets: E2EAssets) -> None:
    from transformers import CLIPTokenizer

    images = sorted(e2e_assets.images.glob("*.png"))
    assert [p.name for p in images] == ["img0.png", "img1.png", "img2.png", "img3.png"]
    for image in images:
        assert Image.open(image).size == (64, 64)
        assert image.with_suffix(".txt").read_text(encoding="utf-8").startswith("e2etok, a ")

    tokenizer = CLIPTokenizer.from_pretrained(e2e_assets.tokenizers / "openai_clip-vit-large-patch14")
    assert tokenizer("a photo of a cat")["input_ids"] == CAT_PROMPT_IDS
    bigg = CLIPTokenizer.from_pretrained(e2e_assets.tokenizers / "laion_CLIP-ViT-bigG-14-laion2B-39B-b160k")
    assert bigg.pad_token_id == 0

    model = e2e_assets.sd15_model
    index = json.loads((model / "model_index.json").read_text(encoding="utf-8"))
    assert index["_class_name"] == "StableDiffusionPipeline"
    unet, text_encoder, vae = (read_config(model / part) for part in ("unet", "text_encoder", "vae"))
    # sd-scripts rebuilds the U-Net with these channels; the text encoder must match its context width.
    assert unet["block_out_channels"] == [320, 640, 1280, 1280]
    assert unet["cross_attention_dim"] == text_encoder["hidden_size"]
    assert vae["latent_channels"] == 4
    assert len(vae["down_block_types"]) == 4
    assert any(model.glob("unet/*.safetensors"))


@pytest.mark.sd_scripts
@pytest.mark.slow
def test_e2e_sdxl_model_fits_sdxl_unet(e2e_sdxl_model: Path) -> None:
    index = json.loads((e2e_sdxl_model / "model_index.json").read_text(encoding="utf-8"))
    assert index["_class_name"] == "StableDiffusionXLPipeline"
    text_encoder, text_encoder_2 = (read_config(e2e_sdxl_model / p) for p in ("text_encoder", "text_encoder_2"))
    # sd-scripts' SDXL U-Net is hard-coded: context 2048 = 768 + 1280, and it reads TE1's hidden state 11.
    assert (text_encoder["hidden_size"], text_encoder_2["hidden_size"]) == (768, 1280)
    assert text_encoder["num_hidden_layers"] >= 11
    assert text_encoder_2["projection_dim"] == 1280
    assert read_config(e2e_sdxl_model / "unet")["cross_attention_dim"] == 2048
