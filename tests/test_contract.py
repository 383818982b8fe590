"""Contract tests: our arg spec matches the pinned sd-scripts, which reads what we render as we meant."""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import tomli_w

from kohya_wrap.config.checks import BLOCK_LR_LEN
from kohya_wrap.config.defaults import folder_repeats_and_class
from kohya_wrap.config.models import Config
from kohya_wrap.config.presets import load_config, templates_dir
from kohya_wrap.data.dataset import StepPlan, plan_steps, scan
from kohya_wrap.train.layout import RunLayout
from kohya_wrap.train.render import Rendered, render
from kohya_wrap.train.sd_args import SCRIPT_BY_FAMILY, check_training_args, flatten_training_toml

REPO_ROOT = Path(__file__).resolve().parent.parent
DUMP_TOOL = REPO_ROOT / "tools" / "dump_sd_args.py"
COMMITTED_SPEC = REPO_ROOT / "kohya_wrap" / "train" / "sd_scripts_args.json"


def load_dump_tool() -> ModuleType:
    """tools/ is not a package; load the script as a module to reuse its diff wording."""
    spec = importlib.util.spec_from_file_location("dump_sd_args", DUMP_TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.sd_scripts
def test_committed_arg_spec_matches_the_checkout(sd_scripts_dir: Path, tmp_path: Path) -> None:
    regenerated = tmp_path / "sd_scripts_args.json"
    done = subprocess.run(
        [sys.executable, str(DUMP_TOOL), "--sd-scripts", str(sd_scripts_dir), "--out", str(regenerated)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    committed_text = COMMITTED_SPEC.read_text(encoding="utf-8")
    regenerated_text = regenerated.read_text(encoding="utf-8")
    if committed_text != regenerated_text:
        changes = load_dump_tool().describe_differences(json.loads(committed_text), json.loads(regenerated_text))
        pytest.fail(
            "kohya_wrap/train/sd_scripts_args.json differs from the sd-scripts checkout; run `make sync-args` and "
            "review:\n" + "\n".join(changes or ["(same data, different formatting)"]),
            pytrace=False,
        )


# ---- round trip: rendered files read back by sd-scripts' own readers -----------------------------
#
# Every preset (with a model and dataset folders filled in) and a few hand-written configs that set
# every setting are rendered into a run folder; then ONE child process of the sd-scripts interpreter
# (tests/sd_scripts_probe.py, ~5 s of imports) reads them all the way the training scripts do, and
# the tests compare what sd-scripts understood with what we meant: exact values and exact types.

PROBE = Path(__file__).resolve().parent / "sd_scripts_probe.py"
PRESETS = tuple(sorted(path.stem for path in templates_dir().glob("*.toml")))
FAMILY_OF_PRESET = {
    name: tomllib.loads(path.read_text("utf-8"))["model"]["family"]
    for name in PRESETS
    for path in [templates_dir() / f"{name}.toml"]
}
# Characters that TOML writers and readers get wrong: quotes, backslashes (one before a `u`), brackets,
# `#`, commas, braces, `=` and non-ASCII.
TRICKY = 'q"uote C:\\users\\back ]br[ #hash, {x=1} 日本語'
TRICKY_PROMPT = 'zdm, 1girl, "smile" \\(wink\\) ]x[ #1 日本語の笑顔 --n not an option'
TRICKY_NEGATIVE = 'lowres, "bad hands", back\\slash ] # 悪い --w 64'


@dataclass(frozen=True)
class Image:
    name: str
    size: tuple[int, int]
    caption: str | None  # text of the .txt file beside it; None = no caption file


@dataclass(frozen=True)
class Folder:
    name: str
    entry: dict[str, Any] = field(default_factory=dict)  # other keys of its dataset.dirs entry
    images: tuple[Image, ...] = (
        Image("a.png", (64, 64), "zdm, 1girl, smile"),
        Image("b.png", (96, 64), 'zdm, "quoted tag", back\\slash ] # 笑顔\nsecond line is not read'),
        Image("c.png", (64, 128), None),
        Image("d.PNG", (80, 64), "zdm, upper-case extension"),
    )


@dataclass(frozen=True)
class Case:
    id: str
    doc: dict[str, Any]  # the user's config.toml, less dataset.dirs; model paths are file names
    folders: tuple[Folder, ...] = (Folder("3_zdm 1girl"),)
    run_dir: str = "run"
    caption_extension: str = ".txt"

    @property
    def samples(self) -> bool:
        sampling = self.doc.get("sampling", {})
        return bool(sampling.get("prompts")) and sampling.get("every_n_epochs", 1) > 0


PRESET_PROMPTS = [
    {"text": TRICKY_PROMPT, "negative": TRICKY_NEGATIVE},
    {"text": "zdm, 1girl, solo", "seed": 5},
]
FLUX_FILES = {"clip_l": "clip_l.safetensors", "t5xxl": "t5xxl_fp16.safetensors", "ae": "ae.safetensors"}


def preset_case(name: str) -> Case:
    model = {"base": f"{name}.safetensors"} | (FLUX_FILES if FAMILY_OF_PRESET[name] == "flux" else {})
    return Case(name, {"preset": name, "model": model, "sampling": {"prompts": PRESET_PROMPTS}})


BLOCK_DIMS_SD15 = [4, 8, 8, 8, 8, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 8, 8, 8, 8, 8, 8, 4, 4]
BLOCK_DIMS_SDXL = [0, 4, 4, 4, 8, 8, 8, 16, 16, 16, 32, 32, 32, 16, 16, 16, 8, 8, 8, 4, 4, 4, 0]
HAND_CASES = (
    Case(
        "sd15-every-setting",
        {
            "model": {
                "family": "sd15",
                "base": f"base {TRICKY}.safetensors",
                "vae": f"vae {TRICKY}.pt",
                "tokenizer_cache_dir": f"tokenizers {TRICKY}",
            },
            "dataset": {"resolution": 512, "min_bucket_reso": 320, "max_bucket_reso": 768},
            "tagging": {"trigger_word": 'ｚｄｍ"\\]#'},
            "network": {
                "dim": 8,
                "alpha": 4,
                "block_dims": BLOCK_DIMS_SD15,
                "block_alphas": [2.0] * 5 + [0.5] * 15 + [8.0, 8.0, 4.0, 1.5, 1.0],
                "block_lr_weights": {
                    "down": [1, 1, 0.5, 0.5, 0.25, 0, 1, 1, 1, 1, 1, 1],
                    "mid": [0.5],
                    "up": [0, 0.25, 0.5, 1, 1, 1, 1, 1, 1, 1, 1.5, 2],
                },
                "conv_dim": 4,
                "conv_alpha": 2.5,
            },
            "optimizer": {
                "type": "AdamW",
                "learning_rate": 2e-4,
                "unet_lr": 1e-4,
                "text_encoder_lr": 5e-5,
                "scheduler": "cosine_with_restarts",
                "restarts": 3,
                "warmup_percent": 10,
                "min_snr_gamma": 5,
                "args": {"betas": [0.9, 0.99], "weight_decay": 0.01, "eps": 1e-8, "amsgrad": True},
            },
            "training": {
                "epochs": 3,
                "batch_size": 2,
                "mixed_precision": "no",
                "seed": 1234,
                "clip_skip": 2,
                "shuffle_tags": True,
                "keep_tokens": 2,
                "weighted_captions": True,
                "max_token_length": 225,
                "noise_offset": 0.0357,
                "multires_noise_iterations": 6,
                "multires_noise_discount": 0.3,
                "gradient_checkpointing": True,
                "cache_latents": False,
                "attention": "xformers",
            },
            "sampling": {
                "every_n_epochs": 1,
                "sampler": "k_dpm_2_a",
                "prompts": [
                    {
                        "text": 'ｚｄｍ"\\]#, ' + TRICKY_PROMPT,
                        "negative": TRICKY_NEGATIVE,
                        "width": 512,
                        "height": 768,
                        "steps": 20,
                        "cfg": 6.5,
                        "seed": 7,
                    },
                    {"text": 'ｚｄｍ"\\]#, 1girl, solo'},
                ],
            },
            "save": {
                "output_name": "zdm-every.v1",
                "every_n_epochs": 1,
                "precision": "fp32",
                "save_state": False,
            },
            "run": {"extra_args": {"max_grad_norm": 0.5, "ip_noise_gamma": 0.05}},
        },
        folders=(
            Folder(f"5_zdm {TRICKY}"),
            Folder("plain", {"repeats": 2, "class_token": f"zdm {TRICKY}"}),
            Folder(f"reg {TRICKY}", {"is_reg": True, "class_token": f"1girl {TRICKY}"}),
        ),
        run_dir=f"run {TRICKY}",
    ),
    Case(
        "sdxl-vpred-adafactor-no-buckets",
        {
            "model": {"family": "sdxl", "variant": "noobai-vpred", "base": "noobai-vpred.safetensors"},
            "dataset": {"resolution": 1024, "enable_bucket": False, "caption_extension": "tags"},
            "network": {
                "dim": 32,
                "alpha": 16,
                "block_dims": BLOCK_DIMS_SDXL,
                "block_alphas": [1.0] + [2.0] * 9 + [4.0] * 3 + [2.0] * 9 + [1.0],
                "block_lr_weights": {
                    "down": "sine",
                    "mid": [1.0, 0.5, 0.0],
                    "up": [1, 1, 1, 0.75, 0.75, 0.75, 0.5, 0.5, 0.5],
                },
                "conv_dim": 8,
            },
            "optimizer": {
                "type": "Adafactor",
                "learning_rate": 1e-4,
                "unet_lr": 1e-4,
                "text_encoder_lr": 1e-5,
                "scheduler": "constant_with_warmup",
                "warmup_percent": 5,
                "min_snr_gamma": 5,
            },
            "training": {
                "epochs": 4,
                "batch_size": 1,
                "mixed_precision": "bf16",
                "weighted_captions": True,
                "max_token_length": 225,
                "noise_offset": 0.05,
                "multires_noise_iterations": 8,
                "multires_noise_discount": 0.25,
                "fp8_base": True,
                "keep_tokens": 1,
            },
            "sampling": {"sampler": "euler", "prompts": [{"text": TRICKY_PROMPT, "cfg": 5, "steps": 24}]},
            "save": {"precision": "bf16"},
        },
        folders=(
            Folder(
                "2_zdm",
                images=(Image("a.png", (1024, 1024), "zdm, 1girl"), Image("b.png", (1216, 1024), None)),
            ),
        ),
        caption_extension=".tags",
    ),
    Case(
        "sdxl-cached-te-prodigy",
        {
            "model": {"family": "sdxl", "base": "sdxl-base.safetensors"},
            "network": {"dim": 16, "alpha": 16, "train_unet_only": True},
            "optimizer": {
                "type": "Prodigy",
                "learning_rate": 1.0,
                "unet_lr": 1.0,
                "scheduler": "cosine",
                "args": {
                    "d_coef": 2.0,
                    "decouple": True,
                    "use_bias_correction": True,
                    "safeguard_warmup": True,
                    "weight_decay": 0.01,
                    "betas": [0.9, 0.99],
                },
            },
            "training": {
                "epochs": 2,
                "batch_size": 3,
                "clip_skip": 2,
                "shuffle_tags": False,
                "keep_tokens": 0,
                "cache_text_encoder_outputs": True,
                "attention": "none",
                "gradient_checkpointing": False,
            },
            "sampling": {"every_n_epochs": 0, "prompts": [{"text": "never rendered"}]},
            "save": {"every_n_epochs": 2, "save_state": True},
        },
        folders=(Folder("7_zdm solo"), Folder("more", {"repeats": 3})),
    ),
    Case(
        "sd15-lion-no-buckets",
        {
            "model": {"family": "sd15", "base": "sd15.ckpt"},
            "dataset": {"resolution": 512, "enable_bucket": False},
            "network": {"dim": 4, "alpha": 1, "train_text_encoder_only": True},
            "optimizer": {
                "type": "Lion",
                "learning_rate": 3e-5,
                "text_encoder_lr": 3e-5,
                "scheduler": "linear",
                "warmup_percent": 3,
                "args": {"betas": [0.95, 0.98], "weight_decay": 0.1},
            },
            "training": {
                "epochs": 5,
                "batch_size": 4,
                "mixed_precision": "fp16",
                "clip_skip": 1,
                "shuffle_tags": False,
                "keep_tokens": 0,
            },
            "sampling": {"every_n_epochs": 5, "prompts": [{"text": "zdm", "width": 640, "height": 448}]},
            "run": {"num_processes": 2},
        },
        folders=(Folder("imgs", {"repeats": 4}),),
    ),
    Case(
        "flux-every-setting",
        {
            "model": {
                "family": "flux",
                "variant": "schnell",
                "base": f"flux1 {TRICKY}.safetensors",
                "clip_l": f"clip_l {TRICKY}.safetensors",
                "t5xxl": f"t5xxl {TRICKY}.safetensors",
                "ae": f"ae {TRICKY}.safetensors",
            },
            "dataset": {"resolution": 768, "min_bucket_reso": 256, "max_bucket_reso": 1536},
            "network": {"dim": 16, "alpha": 8, "conv_dim": 4, "conv_alpha": 2},
            "optimizer": {
                "type": "AdamW8bit",
                "learning_rate": 1e-4,
                "unet_lr": 1e-4,
                "text_encoder_lr": 5e-5,
                "scheduler": "polynomial",
                "warmup_percent": 20,
                "args": {"weight_decay": 0.01},
            },
            "training": {
                "epochs": 2,
                "batch_size": 2,
                "mixed_precision": "bf16",
                "fp8_base": True,
                "shuffle_tags": True,
                "keep_tokens": 1,
            },
            "flux": {
                "guidance_scale": 3.5,
                "timestep_sampling": "shift",
                "model_prediction_type": "sigma_scaled",
                "discrete_flow_shift": 3.1582,
                "apply_t5_attn_mask": True,
                "blocks_to_swap": 8,
            },
            "sampling": {
                "every_n_epochs": 1,
                "sampler": "euler",
                "prompts": [
                    {
                        "text": TRICKY_PROMPT,
                        "negative": TRICKY_NEGATIVE,
                        "cfg": 3.5,
                        "steps": 4,
                        "width": 1024,
                    }
                ],
            },
        },
        folders=(Folder(f"4_zdm {TRICKY}"),),
        run_dir=f"run {TRICKY}",
    ),
    # Values with more significant digits than six: network_args are written as text.
    Case(
        "sd15-precise-floats",
        {
            "model": {"family": "sd15", "base": "sd15.safetensors"},
            "network": {
                "dim": 8,
                "alpha": 3.3333333,
                "block_dims": [8] * 25,
                "block_alphas": [1 / 3] * 12 + [0.1234567] + [2.0] * 12,
                "block_lr_weights": {"down": [0.1234567] * 12},
                "conv_dim": 4,
                "conv_alpha": 1.2345678,
            },
            "optimizer": {"type": "AdamW", "args": {"weight_decay": 0.0123456789}},
        },
    ),
    # An apostrophe is common in folder names ("Bob's photos"); toml 0.10.2 once dropped such subsets.
    Case(
        "apostrophe-paths",
        {
            "preset": "sd15-character",
            "model": {"base": "Bob's model.safetensors"},
            "sampling": {"prompts": [{"text": "bob's portrait, 'quoted'"}]},
        },
        # One apostrophe per subset: toml 0.10.2 paired two of them up as a quoted string.
        folders=(Folder("Bob's photos", {"class_token": "bob"}), Folder("2_bob")),
        run_dir="Bob's run",
    ),
)
CASES = {case.id: case for case in [*(preset_case(name) for name in PRESETS), *HAND_CASES]}

# Places where sd-scripts reads something else than we meant. Each is a bug in kohya_wrap's side of
# the contract, pinned here with strict xfail so that the fix makes the test fail until this entry goes.
KNOWN_MISMATCHES: dict[tuple[str, str], str] = {}


def case_params(aspect: str, ids: Iterable[str] = CASES) -> list[Any]:
    """One pytest param per case; a known mismatch of this aspect is a strict xfail with its reason."""
    params = []
    for case_id in ids:
        reason = KNOWN_MISMATCHES.get((case_id, aspect))
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(case_id, marks=marks, id=case_id))
    return params


@dataclass(frozen=True)
class Built:
    case: Case
    config: Config
    plan: StepPlan
    layout: RunLayout
    rendered: Rendered
    files: dict[str, str]
    captions: dict[str, str]  # image path → the caption sd-scripts should read for it
    train_repeats: dict[str, int]  # training (not regularisation) image path → its repeats

    @property
    def script(self) -> str:
        return SCRIPT_BY_FAMILY[self.config.model.family]


def write_png(path: Path, size: tuple[int, int]) -> None:
    from PIL import Image as PILImage

    PILImage.new("RGB", size, (200, 80, 40)).save(path)


def build(case: Case, root: Path) -> Built:
    """Make the case's folders and images, load its config as the CLI does, render, write the run folder."""
    root.mkdir(parents=True)
    captions: dict[str, str] = {}
    dirs = []
    for folder in case.folders:
        path = root / "data" / folder.name
        path.mkdir(parents=True)
        entry = {"path": str(path)} | folder.entry
        dirs.append(entry)
        for image in folder.images:
            write_png(path / image.name, image.size)
            if image.caption is not None:
                (path / image.name).with_suffix(case.caption_extension).write_text(image.caption + "\n", "utf-8")
        for image in folder.images:
            fallback = entry.get("class_token", folder_repeats_and_class(folder.name)[1]) or ""
            text = image.caption.splitlines()[0] if image.caption is not None else fallback
            captions[str(path / image.name)] = text
    doc = copy.deepcopy(case.doc)
    doc.setdefault("dataset", {})["dirs"] = dirs
    for key in ("base", "vae", "clip_l", "t5xxl", "ae", "tokenizer_cache_dir"):
        if key in doc["model"]:
            doc["model"][key] = str(root / "models" / doc["model"][key])
    config_path = root / "config.toml"
    config_path.write_text(tomli_w.dumps(doc), "utf-8")
    cfg = load_config(config_path).config
    plan = plan_steps(cfg, scan(cfg))
    train_repeats = {
        str(Path(d.path) / image.name): d.repeats
        for d, folder in zip(cfg.dataset.dirs, case.folders, strict=True)
        if not d.is_reg and d.repeats
        for image in folder.images
    }
    layout = RunLayout(root / case.run_dir)
    rendered = render(cfg, layout, plan)
    layout.root.mkdir()
    files = rendered.files(layout)
    for name, text in files.items():
        (layout.root / name).write_text(text, "utf-8")
    return Built(case, cfg, plan, layout, rendered, files, captions, train_repeats)


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Built]:
    root = tmp_path_factory.mktemp("contract")
    return {case_id: build(case, root / case_id) for case_id, case in CASES.items()}


def untag(node: Any) -> Any:
    """Undo sd_scripts_probe.tagged: Python values with their types (tuples stay tuples)."""
    if node is None:
        return None
    kind, value = node
    if kind in ("list", "tuple"):
        items = [untag(v) for v in value]
        return items if kind == "list" else tuple(items)
    if kind == "dict":
        return {k: untag(v) for k, v in value.items()}
    if kind in ("bool", "int", "float", "str"):
        return value
    if kind == "Path":
        return Path(value)
    return f"<{kind} {value}>"


@pytest.fixture(scope="session")
def sd_reads(
    built: dict[str, Built], sd_scripts_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Any]]:
    """What sd-scripts made of every case, by case id and stage (one child process for all cases)."""
    folder = tmp_path_factory.mktemp("probe")
    cases = [
        {
            "id": b.case.id,
            "script": b.script,
            "train_toml": str(b.layout.train_toml),
            "dataset_toml": str(b.layout.dataset_toml),
            "keys": list(flatten_training_toml(b.rendered.training)),
        }
        for b in built.values()
    ]
    (folder / "cases.json").write_text(json.dumps(cases, ensure_ascii=False), "utf-8")
    done = subprocess.run(
        [sys.executable, str(PROBE), str(folder / "cases.json"), str(folder / "results.json")],
        cwd=sd_scripts_dir,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-40:])
        pytest.fail(f"{PROBE.name} failed (exit {done.returncode}):\n{tail}", pytrace=False)
    raw = json.loads((folder / "results.json").read_text("utf-8"))
    return {
        case_id: {
            name: {"error": result.get("error"), "where": result.get("where"), "value": result.get("value")}
            for name, result in stages.items()
        }
        for case_id, stages in raw.items()
    }


def stage_value(reads: dict[str, Any], name: str) -> Any:
    """A probe stage's value; fails the test with sd-scripts' own error if the stage raised."""
    result = reads.get(name)
    assert result is not None, f"sd-scripts never reached {name} (an earlier stage failed: {reads})"
    assert result["error"] is None, f"sd-scripts {name}: {result['error']}\n{result['where']}"
    return result["value"]


def exact(value: Any) -> Any:
    """A form of `value` whose equality also compares types: 1 != 1.0 != True, (1,) != [1]."""
    if isinstance(value, list | tuple):
        return (type(value).__name__, tuple(exact(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((k, exact(v)) for k, v in value.items())))
    return (type(value).__name__, value)


def differences(ours: dict[str, Any], theirs: dict[str, Any], what: str) -> list[str]:
    return [
        f"{what}.{key}: we wrote {ours[key]!r} ({type(ours[key]).__name__}), sd-scripts has "
        f"{theirs.get(key, '<missing>')!r} ({type(theirs.get(key)).__name__})"
        for key in ours
        if exact(ours[key]) != exact(theirs.get(key, "<missing>"))
    ]


# ---- fast: no sd-scripts needed -----------------------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_renders_inside_the_sd_scripts_arg_spec(built: dict[str, Built], preset: str) -> None:
    b = built[preset]
    assert b.config.model.family == FAMILY_OF_PRESET[preset]
    assert b.rendered.script == SCRIPT_BY_FAMILY[FAMILY_OF_PRESET[preset]]
    assert check_training_args(b.rendered.script, flatten_training_toml(b.rendered.training)) == []


@pytest.mark.parametrize("case_id", case_params("toml"))
def test_rendered_tomls_read_back_the_same_with_sd_scripts_toml_reader(built: dict[str, Built], case_id: str) -> None:
    toml = pytest.importorskip("toml", reason="the `toml` package (sd-scripts' TOML reader) is not installed")
    b = built[case_id]
    for name, ours in (
        (b.layout.dataset_toml.name, b.rendered.dataset),
        (b.layout.train_toml.name, b.rendered.training),
    ):
        text = b.files[name]
        assert exact(tomllib.loads(text)) == exact(ours), name
        assert exact(toml.loads(text)) == exact(ours), f"toml {toml.__version__} reads {name} differently"


def test_tricky_strings_reach_the_rendered_files(built: dict[str, Built]) -> None:
    """The hand-written cases do carry the characters the round-trip tests are about."""
    b = built["sd15-every-setting"]
    assert TRICKY in b.rendered.dataset["datasets"][0]["subsets"][0]["image_dir"]
    assert TRICKY in b.rendered.dataset["datasets"][0]["subsets"][1]["class_tokens"]
    assert TRICKY in flatten_training_toml(b.rendered.training)["output_dir"]
    assert TRICKY in flatten_training_toml(b.rendered.training)["pretrained_model_name_or_path"]
    assert TRICKY_PROMPT in b.rendered.prompts[0]["prompt"]
    assert "'" in built["apostrophe-paths"].rendered.dataset["datasets"][0]["subsets"][0]["image_dir"]


# ---- sd-scripts reads them back ------------------------------------------------------------------


@pytest.mark.sd_scripts
@pytest.mark.parametrize("case_id", case_params("training"))
def test_training_toml_reads_back_exactly(built: dict[str, Built], sd_reads: dict[str, Any], case_id: str) -> None:
    b = built[case_id]
    ours = flatten_training_toml(b.rendered.training)
    theirs = {key: untag(v) for key, v in stage_value(sd_reads[case_id], "read_args").items()}
    assert type(ours["lr_warmup_steps"]) is int and type(ours["max_train_steps"]) is int
    # The command line wins over the TOML (`--dataset_config`, parsed as a Path): the same file.
    assert theirs.pop("dataset_config") == Path(ours.pop("dataset_config")) == b.layout.dataset_toml
    problems = differences(ours, theirs, "train.toml")
    assert not problems, "\n".join(problems)


@pytest.mark.sd_scripts
@pytest.mark.parametrize("case_id", case_params("arguments"))
def test_sd_scripts_accepts_the_arguments_and_dataset(sd_reads: dict[str, Any], case_id: str) -> None:
    """verify_training_args, prepare_dataset_args and the trainer's assert_extra_args raise nothing."""
    stage_value(sd_reads[case_id], "prepare_args")
    stage_value(sd_reads[case_id], "assert_extra_args")


def as_sanitized(dataset: dict[str, Any]) -> dict[str, Any]:
    """Our dataset TOML as ConfigSanitizer returns it when it reads it as we meant: resolution n → (n, n)."""
    doc = copy.deepcopy(dataset)
    for entry in doc["datasets"]:
        entry["resolution"] = (entry["resolution"], entry["resolution"])
    return doc


@pytest.mark.sd_scripts
@pytest.mark.parametrize("case_id", case_params("dataset"))
def test_dataset_toml_reads_back_exactly(built: dict[str, Built], sd_reads: dict[str, Any], case_id: str) -> None:
    b = built[case_id]
    read = stage_value(sd_reads[case_id], "dataset_config")
    ours = b.rendered.dataset
    assert exact(untag(read["loaded"])) == exact(ours)
    assert exact(untag(read["sanitized"])) == exact(as_sanitized(ours))
    # What each subset finally gets after sd-scripts' fallbacks (subset → dataset → general → argparse).
    (dataset,) = untag(read["blueprint"])["datasets"]
    (ours_dataset,) = as_sanitized(ours)["datasets"]
    ours_params = {k: v for k, v in ours_dataset.items() if k != "subsets"}
    problems = differences(ours_params, dataset["params"], "datasets.0")
    assert len(dataset["subsets"]) == len(ours_dataset["subsets"]), "sd-scripts sees another number of subsets"
    for i, (subset, theirs) in enumerate(zip(ours_dataset["subsets"], dataset["subsets"], strict=True)):
        problems += differences(ours["general"] | subset, theirs, f"datasets.0.subsets.{i}")
        # Not sd-scripts' own defaults (.caption, no shuffling): ours reached it.
        assert theirs["caption_extension"] == b.config.dataset.caption_extension
        assert theirs["shuffle_caption"] is b.config.training.shuffle_tags
    assert not problems, "\n".join(problems)


@pytest.mark.sd_scripts
@pytest.mark.parametrize("case_id", case_params("dataset_group"))
def test_dataset_group_has_our_images_captions_and_steps(
    built: dict[str, Built], sd_reads: dict[str, Any], case_id: str
) -> None:
    b = built[case_id]
    group = stage_value(sd_reads[case_id], "dataset_group")
    images = {path: untag(info) for path, info in group["images"].items()}
    assert sorted(images) == sorted(b.captions)
    assert {path: info["caption"] for path, info in images.items()} == b.captions
    assert {p: info["num_repeats"] for p, info in images.items() if not info["is_reg"]} == b.train_repeats
    assert group["num_train_images"] == b.plan.images_with_repeats
    assert sorted((tuple(reso), count) for reso, count in group["buckets"]) == sorted(b.plan.buckets)
    # train_network.py: total steps = epochs × ceil(batches / processes / gradient accumulation (1)).
    assert group["batches"] == b.plan.batches_per_epoch
    steps = b.config.training.epochs * math.ceil(group["batches"] / b.config.run.num_processes)
    assert flatten_training_toml(b.rendered.training)["max_train_steps"] == steps


def preset_lr_weights(name: str, n: int) -> list[float]:
    """The shapes of the block LR weight presets sd-scripts names (networks/lora.py, get_block_lr_weight)."""
    shape = {
        "cosine": lambda i: math.sin(math.pi * ((n - 1 - i) / (n - 1)) / 2),
        "sine": lambda i: math.sin(math.pi * (i / (n - 1)) / 2),
        "linear": lambda i: i / (n - 1),
        "reverse_linear": lambda i: (n - 1 - i) / (n - 1),
        "zeros": lambda i: 0.0,
    }[name]
    return [shape(i) for i in range(n)]


def expected_lr_weights(cfg: Config) -> list[float] | None:
    weights = cfg.network.block_lr_weights
    if weights is None:
        return None
    family = cfg.model.family
    result: list[float] = []
    for part, n in zip(("down", "mid", "up"), BLOCK_LR_LEN[family], strict=True):
        value = getattr(weights, part)
        values = [1.0] * n if value is None else preset_lr_weights(value, n) if isinstance(value, str) else value
        result += [v if v > 0 else 0 for v in values]  # weights ≤ block_lr_zero_threshold (0) become 0
    return [1.0, *result, 1.0] if family == "sdxl" else result


@pytest.mark.sd_scripts
@pytest.mark.parametrize("case_id", case_params("network"))
def test_network_module_reads_our_network_args(built: dict[str, Built], sd_reads: dict[str, Any], case_id: str) -> None:
    net = built[case_id].config.network
    theirs = untag(stage_value(sd_reads[case_id], "create_network"))
    ours: dict[str, Any] = {
        "dim": net.dim,
        "alpha": net.alpha,
        "conv_dim": net.conv_dim,
        "conv_alpha": net.conv_alpha,
    }
    if built[case_id].config.model.family != "flux":
        ours["block_lr_weight"] = expected_lr_weights(built[case_id].config)
    if net.block_dims is not None:
        assert net.block_alphas is not None
        conv = None if net.conv_dim is None else [net.conv_dim] * len(net.block_dims)
        conv_alphas = None if net.conv_alpha is None else [net.conv_alpha] * len(net.block_dims)
        ours |= {
            "block_dims": net.block_dims,
            "block_alphas": net.block_alphas,
            "conv_block_dims": conv,
            "conv_block_alphas": conv_alphas,
        }
    problems = [
        f"{key}: we meant {ours[key]!r}, sd-scripts has {theirs.get(key)!r}"
        for key in ours
        if not same_numbers(ours[key], theirs.get(key))
    ]
    assert not problems, "\n".join(problems)


def same_numbers(a: Any, b: Any) -> bool:
    """Equal values, lists compared item by item; floats to 1e-12 (sd-scripts parses them from text)."""
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_numbers(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=0)
    return bool(a == b)


@pytest.mark.sd_scripts
@pytest.mark.parametrize("case_id", case_params("optimizer"))
def test_optimizer_gets_our_arguments(built: dict[str, Built], sd_reads: dict[str, Any], case_id: str) -> None:
    b = built[case_id]
    result = sd_reads[case_id]["get_optimizer"]
    if result["error"] and result["error"].startswith(("ImportError", "ModuleNotFoundError")):
        pytest.skip(f"the optimizer's package is not installed for sd-scripts: {result['error']}")
    theirs = untag(stage_value(sd_reads[case_id], "get_optimizer"))
    opt = b.config.optimizer
    args = dict(opt.args)
    if opt.type == "Adafactor" and "relative_step" not in args:
        args |= {"relative_step": False, "scale_parameter": False, "warmup_init": False}
    # ast.literal_eval of "betas=0.9,0.99" gives a tuple; everything else keeps its type.
    ours = {k: tuple(float(x) for x in v) if isinstance(v, list) else v for k, v in args.items()}
    ours["lr"] = opt.learning_rate
    problems = differences(ours, theirs["defaults"], f"{theirs['class']} defaults")
    assert not problems, "\n".join(problems)
    # Adafactor in relative_step mode would silently replace the scheduler with "adafactor:<lr>".
    assert theirs["lr_scheduler"] == opt.scheduler


@pytest.mark.sd_scripts
@pytest.mark.parametrize("case_id", case_params("prompts", [c.id for c in CASES.values() if c.samples]))
def test_sample_prompts_read_back_exactly(built: dict[str, Built], sd_reads: dict[str, Any], case_id: str) -> None:
    b = built[case_id]
    assert flatten_training_toml(b.rendered.training)["sample_prompts"] == str(b.layout.prompts)
    theirs = untag(stage_value(sd_reads[case_id], "load_prompts"))
    assert len(theirs) == len(b.rendered.prompts)
    problems = []
    for i, (ours, prompt) in enumerate(zip(b.rendered.prompts, theirs, strict=True)):
        assert prompt.pop("enum") == i
        problems += differences(ours, prompt, f"prompts.{i}")
        assert set(prompt) == set(ours)
    assert not problems, "\n".join(problems)
