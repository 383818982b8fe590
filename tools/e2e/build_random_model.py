"""Build a randomly initialised SD1.5 or SDXL model as a diffusers folder that sd-scripts accepts, offline."""

# sd-scripts rebuilds the U-Net from the diffusers weights into its own hard-coded U-Net
# (library/original_unet.py: channels 320/640/1280/1280; library/sdxl_original_unet.py: all of SDXL),
# so the U-Net must be full size. The text encoders and the VAE are built from their own configs,
# so they can be tiny, within these limits:
#   SD1.5: text encoder hidden size == U-Net cross_attention_dim (free to choose).
#   SDXL:  U-Net context is 2048 = TE1 hidden 768 + TE2 hidden 1280; TE1 needs >= 11 layers
#          (sd-scripts reads hidden_states[11]); TE2 needs projection_dim 1280 (pooled -> adm input).
#   VAE:   4 blocks (8x downsampling) and 4 latent channels; its widths are free.

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DiffusionPipeline,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

CLIP_L_DIR = "openai_clip-vit-large-patch14"
CLIP_G_DIR = "laion_CLIP-ViT-bigG-14-laion2B-39B-b160k"


def tiny_vae() -> AutoencoderKL:
    """A VAE with SD's shape contract (8x down, 4 latent channels) and almost no weights."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
    )


def clip_text_config(
    hidden: int, layers: int, heads: int, intermediate: int, projection_dim: int | None = None
) -> CLIPTextConfig:
    """A CLIP text tower config with the real vocabulary and special token ids."""
    extra = {} if projection_dim is None else {"projection_dim": projection_dim}
    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        **extra,
    )


def with_nonzero_final_norm_bias(text_encoder: CLIPTextModel, seed: int) -> CLIPTextModel:
    """Give the final LayerNorm a non-zero bias, so sample images are not NaN.

    With bias 0 the output has mean ~0 per token, and sd-scripts' prompt weighting rescales the
    embeddings by previous_mean / current_mean = 0 / 0. Training itself is unaffected.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bias = text_encoder.text_model.final_layer_norm.bias
        bias.copy_(0.5 + 0.1 * torch.randn(bias.shape, generator=generator))
    return text_encoder


def build_sd15(tokenizers: Path, cross_dim: int) -> DiffusionPipeline:
    """Full-size SD1.5 U-Net with a `cross_dim`-wide 2-layer text encoder and the tiny VAE."""
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=cross_dim,
        attention_head_dim=8,
    )
    text_encoder = with_nonzero_final_norm_bias(CLIPTextModel(clip_text_config(cross_dim, 2, 4, cross_dim * 2)), seed=0)
    scheduler = PNDMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=tiny_vae(),
        text_encoder=text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(str(tokenizers / CLIP_L_DIR)),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_sdxl(tokenizers: Path) -> DiffusionPipeline:
    """Full-size SDXL U-Net, text encoders with the required widths but tiny MLPs, and the tiny VAE."""
    unet = UNet2DConditionModel(
        sample_size=128,
        in_channels=4,
        out_channels=4,
        block_out_channels=(320, 640, 1280),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20),
        cross_attention_dim=2048,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    )
    text_encoder = with_nonzero_final_norm_bias(CLIPTextModel(clip_text_config(768, 11, 12, 64)), seed=1)
    text_encoder_2 = with_nonzero_final_norm_bias(
        CLIPTextModelWithProjection(clip_text_config(1280, 2, 20, 64, projection_dim=1280)), seed=2
    )
    scheduler = EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
    )
    return StableDiffusionXLPipeline(
        vae=tiny_vae(),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=CLIPTokenizer.from_pretrained(str(tokenizers / CLIP_L_DIR)),
        tokenizer_2=CLIPTokenizer.from_pretrained(str(tokenizers / CLIP_G_DIR)),
        unet=unet,
        scheduler=scheduler,
    )


def main() -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("arch", choices=["sd15", "sdxl"])
    ap.add_argument("out", type=Path, help="diffusers folder to create")
    ap.add_argument("tokenizers", type=Path, help="folder made by build_clip_tokenizer.py")
    ap.add_argument("--dtype", choices=["fp16", "fp32"], default="fp16", help="saved weights; loaders upcast")
    ap.add_argument("--cross-dim", type=int, default=64, help="SD1.5: U-Net cross_attention_dim == TE width")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    start = time.monotonic()
    pipe = build_sd15(args.tokenizers, args.cross_dim) if args.arch == "sd15" else build_sdxl(args.tokenizers)
    built = time.monotonic()
    if args.dtype == "fp16":
        pipe.to(torch.float16)
    pipe.save_pretrained(str(args.out), safe_serialization=True)
    print(f"{args.arch}: init {built - start:.1f}s, save {time.monotonic() - built:.1f}s -> {args.out}")


if __name__ == "__main__":
    main()
