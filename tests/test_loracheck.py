"""LoRA files proven loadable: ComfyUI's key naming, the base model's layers, diffusers' converter and loader."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from kohya_wrap.review.loracheck import check_lora, diffusers_name

# A tiny SD1.5-shaped model as a diffusers folder: two U-Net layers and one text encoder layer.
UNET = {
    "down_blocks.0.attentions.0.proj_in.weight": (320, 320, 1, 1),
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight": (320, 320),
    "down_blocks.0.attentions.0.transformer_blocks.0.norm1.weight": (320,),
}
TEXT = {"text_model.encoder.layers.0.self_attn.q_proj.weight": (768, 768)}


def write_base(root: Path) -> Path:
    (root / "unet").mkdir(parents=True)
    (root / "text_encoder").mkdir()
    save_file({k: np.zeros(s, np.float16) for k, s in UNET.items()}, str(root / "unet" / "model.safetensors"))
    save_file({k: np.zeros(s, np.float16) for k, s in TEXT.items()}, str(root / "text_encoder" / "model.safetensors"))
    return root


def lora_tensors(module: str, down: tuple[int, ...], up: tuple[int, ...]) -> dict[str, np.ndarray]:
    return {
        f"{module}.lora_down.weight": np.zeros(down, np.float16),
        f"{module}.lora_up.weight": np.zeros(up, np.float16),
        f"{module}.alpha": np.array(2.0, np.float16),
    }


GOOD = {
    **lora_tensors("lora_unet_down_blocks_0_attentions_0_proj_in", (4, 320, 1, 1), (320, 4, 1, 1)),
    **lora_tensors("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", (4, 320), (320, 4)),
    **lora_tensors("lora_te_text_model_encoder_layers_0_self_attn_q_proj", (4, 768), (768, 4)),
}


def write_lora(path: Path, tensors: dict[str, np.ndarray]) -> Path:
    save_file(tensors, str(path))
    return path


def test_a_well_formed_lora_passes_the_naming_and_layer_checks(tmp_path: Path) -> None:
    base = write_base(tmp_path / "base")
    result = check_lora(write_lora(tmp_path / "good.safetensors", GOOD), "sd15", base, use_diffusers=False)
    assert (result.modules, result.problems, result.notes) == (3, (), ())
    assert result.checked == (
        "key names follow ComfyUI's kohya mapping",
        "every module is a layer of the base model, with fitting shapes",
    )


def test_keys_comfyui_would_not_load_are_named(tmp_path: Path) -> None:
    base = write_base(tmp_path / "base")
    bad = {
        **GOOD,
        # SDXL's prefix in an SD1.5 LoRA, a layer the model does not have, a wrong shape, a missing alpha,
        # a text encoder layer ComfyUI does not map, and diffusers-style names.
        **lora_tensors("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", (4, 768), (768, 4)),
        **lora_tensors("lora_unet_down_blocks_9_attentions_0_proj_in", (4, 320, 1, 1), (320, 4, 1, 1)),
        **lora_tensors("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", (4, 640), (320, 4)),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_norm1.lora_down.weight": np.zeros((4, 320)),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_norm1.lora_up.weight": np.zeros((320, 4)),
        **lora_tensors("lora_te_text_model_final_layer_norm", (4, 768), (768, 4)),
        "unet.down_blocks.0.attentions.0.proj_in.lora.down.weight": np.zeros((4, 320)),
    }
    result = check_lora(write_lora(tmp_path / "bad.safetensors", bad), "sd15", base, use_diffusers=False)
    assert result.problems == (
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj (alpha, lora_down.weight, lora_up.weight): not a "
        "kohya sd15 LoRA key (lora_unet_/lora_te_<module>.lora_up/.lora_down/.alpha); ComfyUI would log 'lora key "
        "not loaded'",
        "unet.down_blocks.0.attentions.0.proj_in.lora.down.weight: not a kohya sd15 LoRA key (lora_unet_/lora_te_"
        "<module>.lora_up/.lora_down/.alpha); ComfyUI would log 'lora key not loaded'",
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_norm1: has no alpha",
        "lora_te_text_model_final_layer_norm: ComfyUI maps only the attention and MLP layers of a text encoder",
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q: LoRA 640→320 does not fit the layer "
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q [320, 320]",
        "lora_unet_down_blocks_9_attentions_0_proj_in: the base model has no such layer; ComfyUI would log 'lora key "
        "not loaded'",
    )


@pytest.mark.parametrize(
    ("sgm", "diffusers"),
    [
        (
            "input_blocks_4_1_transformer_blocks_0_attn1_to_q",
            "down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q",
        ),
        ("input_blocks_5_0_in_layers_2", "down_blocks_1_resnets_1_conv1"),
        ("input_blocks_3_0_op", "down_blocks_0_downsamplers_0_conv"),
        ("middle_block_1_proj_in", "mid_block_attentions_0_proj_in"),
        ("middle_block_2_emb_layers_1", "mid_block_resnets_1_time_emb_proj"),
        ("output_blocks_2_1_proj_out", "up_blocks_0_attentions_2_proj_out"),
        ("output_blocks_5_2_conv", "up_blocks_1_upsamplers_0_conv"),
        ("output_blocks_8_0_skip_connection", "up_blocks_2_resnets_2_conv_shortcut"),
        ("down_blocks_0_attentions_0_proj_in", "down_blocks_0_attentions_0_proj_in"),
    ],
)
def test_original_unet_names_map_to_diffusers_names(sgm: str, diffusers: str) -> None:
    assert diffusers_name(sgm) == diffusers


def test_without_the_base_model_only_the_names_are_checked(tmp_path: Path) -> None:
    result = check_lora(write_lora(tmp_path / "good.safetensors", GOOD), "sd15", tmp_path / "gone", False)
    assert result.problems == ()
    assert result.notes == (
        f"the base model {tmp_path / 'gone'} is not here (a hub id or a moved file): module names were not checked",
    )
    assert result.checked == ("key names follow ComfyUI's kohya mapping",)


def test_a_file_that_is_not_safetensors_is_one_problem(tmp_path: Path) -> None:
    (tmp_path / "x.safetensors").write_bytes(b"\x01")
    result = check_lora(tmp_path / "x.safetensors", "sd15", None, False)
    assert result.problems == (f"{tmp_path / 'x.safetensors'}: too short to be a safetensors file",)


def test_without_diffusers_the_check_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "diffusers", None)  # `import diffusers` now fails as if it were missing
    result = check_lora(write_lora(tmp_path / "good.safetensors", GOOD), "sd15", write_base(tmp_path / "base"))
    assert result.problems == ()
    assert result.notes == ("diffusers is not installed, so its converter was not run (pip install diffusers)",)


# ---- the LoRA the real CPU training produces -------------------------------------------------------------------


@pytest.mark.sd_scripts
def test_the_trained_sd15_lora_loads_in_comfyui_and_diffusers(
    tmp_path_factory: pytest.TempPathFactory,
    e2e_assets,  # type: ignore[no-untyped-def]
) -> None:
    from real_run import real_runs

    run = real_runs(tmp_path_factory, e2e_assets).run
    loras = sorted((run / "output").glob("*.safetensors"))
    assert [p.name for p in loras] == ["e2e_lora-000001.safetensors", "e2e_lora.safetensors"]
    for lora in loras:
        result = check_lora(lora, "sd15", e2e_assets.sd15_model)
        assert result.problems == () and result.notes == ()
        assert result.checked == (
            "key names follow ComfyUI's kohya mapping",
            "every module is a layer of the base model, with fitting shapes",
            "diffusers' kohya converter takes every key",
        )
    assert_loads_into_pipeline("StableDiffusionPipeline", e2e_assets.sd15_model, loras[-1])
    # The same checks for a user, from the command line.
    done = subprocess.run(
        [sys.executable, "-m", "kohya_wrap", "outputs", str(run), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    modules = check_lora(loras[-1], "sd15", None, False).modules
    assert done.stdout.splitlines() == [
        line
        for name in ("e2e_lora-000001.safetensors", "e2e_lora.safetensors")
        for line in (
            f"{name}: loads ({modules} modules)",
            "  ok: key names follow ComfyUI's kohya mapping",
            "  ok: every module is a layer of the base model, with fitting shapes",
            "  ok: diffusers' kohya converter takes every key",
        )
    ]


def assert_loads_into_pipeline(pipeline_name: str, model: Path, lora: Path, dtype: str = "float32") -> None:
    """diffusers (with peft) loads the LoRA into the model's pipeline: every module gets its weights."""
    import diffusers
    import torch
    from safetensors.torch import load_file

    pipeline = getattr(diffusers, pipeline_name).from_pretrained(str(model), torch_dtype=getattr(torch, dtype))
    pipeline.load_lora_weights(str(lora), adapter_name="ours")
    state = load_file(str(lora))
    modules = {key.partition(".")[0] for key in state}
    parts = [pipeline.unet, pipeline.text_encoder] + (
        [pipeline.text_encoder_2] if pipeline_name != "StableDiffusionPipeline" else []
    )
    injected = [
        (name, module)
        for part in parts
        for name, module in part.named_modules()
        if hasattr(module, "lora_A") and "ours" in module.lora_A
    ]
    assert len(injected) == len(modules)
    # One module's weights, compared with the file: what diffusers loaded is what sd-scripts saved (sd-scripts
    # names SDXL's U-Net modules as the original checkpoint does).
    name, module = next((n, m) for n, m in injected if n.endswith("attn1.to_q"))
    key = next(m for m in modules if diffusers_name(m.removeprefix("lora_unet_")) == name.replace(".", "_"))
    loaded_a, loaded_b = module.lora_A["ours"].weight, module.lora_B["ours"].weight
    assert torch.equal(loaded_a, state[f"{key}.lora_down.weight"].to(loaded_a.dtype))
    assert torch.equal(loaded_b, state[f"{key}.lora_up.weight"].to(loaded_b.dtype))


def assert_sdxl_lora_loads(lora: Path, model: Path) -> None:
    """The SDXL LoRA of the real SDXL training test (tests/test_e2e_train.py): ComfyUI's key names, every
    module a layer of the base model with fitting shapes, diffusers' SDXL converter, and the SDXL pipeline
    (in bf16: the full-size random SDXL model takes half the memory)."""
    result = check_lora(lora, "sdxl", model)
    assert result.problems == () and result.notes == ()
    assert result.checked == (
        "key names follow ComfyUI's kohya mapping",
        "every module is a layer of the base model, with fitting shapes",
        "diffusers' kohya converter takes every key",
    )
    assert result.modules > 0
    assert_loads_into_pipeline("StableDiffusionXLPipeline", model, lora, dtype="bfloat16")
