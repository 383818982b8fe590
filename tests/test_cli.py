"""Tests for kohya_wrap.cli: presets, init, validate, render, schema; bad input exits 2 and writes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sample_data import config_text, write_images, write_models

from kohya_wrap.cli import main
from kohya_wrap.config.presets import list_presets, templates_dir


@dataclass(frozen=True)
class Project:
    """A folder with stand-in model files, one captioned kohya-style image folder and a config."""

    root: Path
    models: dict[str, Path]
    images: Path
    config: Path


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    monkeypatch.chdir(tmp_path)  # run.runs_dir defaults to ./runs
    models = write_models(tmp_path / "models")
    images = tmp_path / "20_zdm 1boy"
    write_images(images, [(64, 64)] * 3)
    config = tmp_path / "config.toml"
    config.write_text(config_text("sd15", models, [images]), encoding="utf-8")
    return Project(tmp_path, models, images, config)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ---- commands that succeed -----------------------------------------------------------------------


def test_presets_lists_every_preset_with_its_summary() -> None:
    result = invoke("presets")
    assert result.exit_code == 0
    assert result.stdout == "".join(f"{name:28} {summary}\n" for name, summary in list_presets())
    assert result.stdout.splitlines()[1] == (
        "sd15-character               SD1.5 character LoRA: SeaArt's walkthrough settings (dim 16, "
        "AdamW8bit, cosine with restarts)."
    )


def test_init_prints_a_config_that_starts_from_the_preset() -> None:
    result = invoke("init", "sdxl-pony-character")
    assert result.exit_code == 0
    assert result.stdout.startswith(
        "# Started from the sdxl-pony-character preset; `preset` pulls in its values, keys below override "
        "them.\n"
        'preset = "sdxl-pony-character"\n\n[model]\n'
    )
    doc = tomllib.loads(result.stdout)
    assert (doc["preset"], doc["save"]["output_name"], doc["tagging"]["trigger_word"]) == (
        "sdxl-pony-character",
        "zdm",
        "zdm",
    )


def test_init_writes_a_config_that_validates_once_paths_are_set(project: Project) -> None:
    target = project.root / "new" / "mine.toml"
    result = invoke("init", "sd15-character", "-o", str(target))
    assert (result.exit_code, result.stdout) == (
        0,
        f"wrote {target}; edit model.base and dataset.dirs, then `kohya-wrap validate {target}`\n",
    )
    assert target.read_text("utf-8") == invoke("init", "sd15-character").stdout
    result = invoke(
        "validate",
        str(target),
        "--set",
        f"model.base={project.models['base']}",
        "--set",
        f'dataset.dirs=[{{path = "{project.images}"}}]',
    )
    assert (result.exit_code, result.stderr) == (0, "")
    assert [p.name for p in target.parent.iterdir()] == ["mine.toml"]


def test_validate_prints_the_plan(project: Project) -> None:
    result = invoke("validate", str(project.config))
    assert (result.exit_code, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert lines[:2] == [
        "ok: sd15 LoRA 'zdm', 3 images × repeats = 60, batch 2, 10 epochs",
        "steps: 30 per epoch × 10 epochs = 300",
    ]
    # The time and VRAM estimate lines between are estimate.py's (tests/test_estimate.py).
    assert lines[-1] == "cost: 600 (images × repeats × epochs, as SeaArt counts it)"


def test_validate_with_a_preset_overrides_and_warnings(project: Project) -> None:
    (project.images / "02.txt").unlink()
    result = invoke(
        "validate",
        str(project.config),
        "--preset",
        "sd15-character",
        "--set",
        "network.alpha=32",
        "--set",
        "training.batch_size=1",
        "--set",
        "run.num_processes=2",
    )
    assert result.exit_code == 0
    assert result.stderr == (
        "warning: network.alpha: 32 is above dim 16, which scales updates up; SeaArt advises alpha ≤ dim, "
        "commonly dim / 2 = 8\nwarning: dataset.dirs.0.path: 1 of 3 images have no .txt caption and will be "
        "captioned 'zdm 1boy': 02.png\n"
    )
    lines = result.stdout.splitlines()
    assert lines[:2] == [
        "ok: sd15 LoRA 'zdm', 3 images × repeats = 60, batch 1, 10 epochs",
        "steps: 60 per epoch × 10 epochs = 300 (over 2 processes)",
    ]
    assert lines[-1] == "cost: 600 (images × repeats × epochs, as SeaArt counts it)"


def test_validate_counts_regularisation_images(project: Project) -> None:
    reg = project.root / "reg"
    write_images(reg, [(64, 64)] * 2, caption=None)
    result = invoke(
        "validate",
        str(project.config),
        "--set",
        f'dataset.dirs=[{{path = "{project.images}"}}, {{path = "{reg}", is_reg = true}}]',
    )
    assert result.exit_code == 0
    assert result.stdout.splitlines()[:2] == [
        "ok: sd15 LoRA 'zdm', 3 images × repeats = 60 + 60 regularisation, batch 2, 10 epochs",
        "steps: 60 per epoch × 10 epochs = 600",
    ]


def test_validate_warns_about_a_missing_model_file(project: Project) -> None:
    project.models["base"].unlink()
    result = invoke("validate", str(project.config))
    assert result.exit_code == 0
    assert result.stderr.startswith("warning: model.base: ")
    assert str(project.models["base"]) in result.stderr


def test_render_writes_every_file_into_a_new_folder(project: Project) -> None:
    out = project.root / "out"
    result = invoke("render", str(project.config), "-o", str(out), "--set", 'sampling.prompts=[{text = "zdm"}]')
    assert (result.exit_code, result.stdout, result.stderr) == (0, f"rendered into {out}\n", "")
    assert sorted(p.name for p in out.iterdir()) == [
        "accelerate.yaml",
        "config.toml",
        "dataset.toml",
        "prompts.json",
        "run.json",
        "train.toml",
    ]
    train = tomllib.loads((out / "train.toml").read_text("utf-8"))
    assert train["dataset"]["dataset_config"] == str(out / "dataset.toml")
    assert json.loads((out / "run.json").read_text("utf-8"))["status"] == "planned"
    resolved = tomllib.loads((out / "config.toml").read_text("utf-8"))
    assert (resolved["network"]["alpha"], resolved["training"]["clip_skip"]) == (8.0, 2)
    assert [p.name for p in project.root.iterdir() if p.name.startswith(".")] == []


def test_render_new_run_makes_a_run_folder(project: Project) -> None:
    result = invoke("render", str(project.config), "--new-run", "--set", "run.runs_dir=myruns")
    assert result.exit_code == 0
    (run,) = (project.root / "myruns").iterdir()
    assert run.name.startswith("zdm-") and len(run.name) == len("zdm-20260101-120000")
    assert result.stdout == f"rendered into {run}\n"
    assert (run / "train.toml").is_file()


def test_schema_is_the_config_json_schema() -> None:
    result = invoke("schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["title"] == "Config"
    assert sorted(schema["properties"]) == [
        "dataset",
        "flux",
        "model",
        "network",
        "optimizer",
        "preset",
        "run",
        "sampling",
        "save",
        "tagging",
        "training",
        "validation",
    ]
    assert schema["required"] == ["model", "dataset"]


# ---- bad input: one line per problem on stderr, exit 2, nothing written ------------------------------

Setup = Callable[[Project], list[str]]


def with_config(extra: str = "", family: str = "sd15") -> Setup:
    """Rewrite the project's config (appending `extra` TOML) and render it."""

    def setup(p: Project) -> list[str]:
        p.config.write_text(config_text(family, p.models, [p.images], extra), encoding="utf-8")
        return ["render", str(p.config), "-o", str(p.root / "out")]

    return setup


def with_text(text: str) -> Setup:
    def setup(p: Project) -> list[str]:
        p.config.write_text(
            text.replace("{base}", str(p.models["base"])).replace("{images}", str(p.images)), encoding="utf-8"
        )
        return ["render", str(p.config), "-o", str(p.root / "out")]

    return setup


def with_args(*args: str) -> Setup:
    def setup(p: Project) -> list[str]:
        return [a.replace("{config}", str(p.config)).replace("{root}", str(p.root)) for a in args]

    return setup


def with_files(change: Callable[[Project], None], *args: str) -> Setup:
    def setup(p: Project) -> list[str]:
        change(p)
        return [a.replace("{config}", str(p.config)).replace("{root}", str(p.root)) for a in args] or [
            "render",
            str(p.config),
            "-o",
            str(p.root / "out"),
        ]

    return setup


def dirs(*paths: str) -> Callable[[Project], None]:
    """Point dataset.dirs at folders (relative to the project) made by the test."""

    def change(p: Project) -> None:
        p.config.write_text(config_text("sd15", p.models, [p.root / path for path in paths]), encoding="utf-8")

    return change


def empty_folder(p: Project) -> None:
    (p.root / "empty").mkdir()
    dirs("empty")(p)


def nested_images(p: Project) -> None:
    write_images(p.root / "parent" / "10_a", [(64, 64)])
    write_images(p.root / "parent" / "5_b", [(64, 64)])
    (p.root / "parent" / "empty_sub").mkdir()
    dirs("parent")(p)


def caption_files(p: Project) -> None:
    for caption in p.images.glob("*.txt"):
        caption.rename(caption.with_suffix(".caption"))


def empty_caption(p: Project) -> None:
    (p.images / "01.txt").write_text("", encoding="utf-8")


def broken_image(p: Project) -> None:
    (p.images / "bad.png").write_bytes(b"not a png")


def mixed_case_image(p: Project) -> None:
    (p.images / "00.png").rename(p.images / "00.Png")


def a_file_as_folder(p: Project) -> None:
    (p.root / "notes.txt").write_text("x", encoding="utf-8")
    dirs("notes.txt")(p)


def existing_output(p: Project) -> None:
    (p.root / "out").mkdir()
    (p.root / "out" / "keep.txt").write_text("mine", encoding="utf-8")


def existing_init_target(p: Project) -> None:
    (p.root / "mine.toml").write_text("# mine\n", encoding="utf-8")


def tags_and_caption_files(p: Project) -> None:
    (p.images / "00.txt").rename(p.images / "00.tags")
    (p.images / "01.txt").rename(p.images / "01.caption")


FLUX_NEEDS = [
    "model.clip_l: Flux needs the clip_l file; set model.clip_l to its path",
    "model.t5xxl: Flux needs the t5xxl file; set model.t5xxl to its path",
    "model.ae: Flux needs the ae file; set model.ae to its path",
]

# (id, setup → command line, expected stderr lines with {root} for the project folder)
BAD_INPUT: list[tuple[str, Setup, list[str]]] = [
    (
        "unknown key",
        with_config("[training]\nepoch = 3\n"),
        ["training.epoch: unknown key; did you mean 'epochs'?"],
    ),
    (
        "unknown section",
        with_config('[optimiser]\ntype = "AdamW"\n'),
        ["optimiser: unknown key; did you mean 'optimizer'?"],
    ),
    (
        "wrong type",
        with_config('[training]\nepochs = "ten"\n'),
        ["training.epochs: Input should be a valid integer (got 'ten')"],
    ),
    (
        "wrong choice",
        with_config('[optimizer]\ntype = "adamw"\n'),
        [
            "optimizer.type: Input should be 'AdamW', 'AdamW8bit', 'Adafactor', 'Lion', 'DAdaptation', "
            "'DAdaptAdam' or 'Prodigy' (got 'adamw')"
        ],
    ),
    (
        "out of range",
        with_config("[network]\ndim = 0\n"),
        ["network.dim: Input should be greater than or equal to 1"],
    ),
    (
        "union value",
        with_config('[run]\ngpu_ids = "0,1"\n'),
        ["run.gpu_ids: expected one of 'all' or a list of integers, got '0,1'"],
    ),
    (
        "missing base",
        with_text('[model]\nfamily = "sd15"\n[dataset]\ndirs = [{path = "{images}"}]\n'),
        ["model.base: required; add it to the config"],
    ),
    (
        "missing family and dirs",
        with_text('[model]\nbase = "{base}"\n[dataset]\n'),
        ["model.family: required; add it to the config", "dataset.dirs: required; add it to the config"],
    ),
    (
        "missing dataset folder",
        with_files(dirs("nope")),
        ["dataset.dirs.0.path: folder not found: {root}/nope"],
    ),
    (
        "dataset path is a file",
        with_files(a_file_as_folder),
        ["dataset.dirs.0.path: not a folder: {root}/notes.txt"],
    ),
    (
        "folder without images",
        with_files(empty_folder),
        ["dataset.dirs.0.path: no images in {root}/empty; add PNG, JPEG, WebP or BMP images"],
    ),
    (
        "images only in subfolders",
        with_files(nested_images),
        [
            "dataset.dirs.0.path: no images in {root}/parent; images are in its subfolders 10_a, 5_b: list "
            "those in dataset.dirs"
        ],
    ),
    (
        ".caption captions",
        with_files(caption_files),
        [
            "dataset.dirs.0.path: 3 images have .caption captions but dataset.caption_extension is .txt, so "
            "they would "
            'be ignored; set caption_extension = ".caption" or rename them'
        ],
    ),
    (
        ".tags and .caption captions",
        with_files(tags_and_caption_files),
        [
            "dataset.dirs.0.path: 2 images have .caption/.tags captions but dataset.caption_extension is "
            ".txt, so they "
            'would be ignored; set caption_extension = ".caption" or rename them'
        ],
    ),
    (
        "empty caption",
        with_files(empty_caption),
        ["dataset.dirs.0.path: empty caption files make sd-scripts stop: 01.txt; write tags into them or delete them"],
    ),
    (
        "unreadable image",
        with_files(broken_image),
        ["dataset.dirs.0.path: cannot read these images (corrupt or not images): bad.png"],
    ),
    (
        "mixed-case extension",
        with_files(mixed_case_image),
        [
            "dataset.dirs.0.path: sd-scripts reads only lower- or upper-case extensions (.png or .PNG) and "
            "would skip 00.Png; rename them"
        ],
    ),
    (
        "unknown preset option",
        with_args("render", "{config}", "--preset", "sd15-charcter", "-o", "{root}/out"),
        ["preset: unknown preset 'sd15-charcter'; did you mean 'sd15-character'? see `kohya-wrap presets`"],
    ),
    (
        "unknown preset in file",
        with_text(
            'preset = "sdxl_style"\n[model]\nfamily = "sd15"\nbase = "{base}"\n'
            '[dataset]\ndirs = [{path = "{images}"}]\n'
        ),
        ["preset: unknown preset 'sdxl_style'; did you mean 'sdxl-style'? see `kohya-wrap presets`"],
    ),
    (
        "preset key after a table",
        with_config('[save]\npreset = "sd15-style"\n'),
        ["save.preset: unknown key"],
    ),
    (
        "bad --set",
        with_args("render", "{config}", "--set", "training.epochs", "-o", "{root}/out"),
        ["--set: 'training.epochs' must look like section.key=value, e.g. training.epochs=3"],
    ),
    (
        "--set into a value",
        with_args("validate", "{config}", "--set", "training=1", "--set", "training.epochs=2"),
        ["--set: 'training.epochs' goes inside 'training', which is not a table"],
    ),
    (
        "bad --set value",
        with_args("render", "{config}", "--set", "training.epochs=[3", "-o", "{root}/out"),
        ["training.epochs: Input should be a valid integer (got '[3')"],
    ),
    (
        "invalid TOML",
        with_text('[model]\nfamily = "sd15\nbase = "{base}"\n'),
        ["config: {root}/config.toml is not valid TOML: Illegal character '\\n' (at line 2, column 15)"],
    ),
    (
        "config not found",
        with_args("validate", "{root}/nope.toml"),
        ["config: file not found: {root}/nope.toml"],
    ),
    (
        "no config",
        with_args("validate"),
        ["config: give a config file or --preset NAME (see `kohya-wrap presets`)"],
    ),
    (
        "constant with warmup",
        with_config('[optimizer]\nscheduler = "constant"\nwarmup_percent = 10\n'),
        [
            "optimizer.warmup_percent: the constant scheduler cannot warm up; set it to 0 or use "
            'scheduler = "constant_with_warmup"'
        ],
    ),
    (
        "U-Net only and TE only",
        with_config("[network]\ntrain_unet_only = true\ntrain_text_encoder_only = true\n"),
        ["network.train_unet_only: cannot be combined with network.train_text_encoder_only; keep at most one of them"],
    ),
    (
        "flux without its files",
        with_text('[model]\nfamily = "flux"\nbase = "{base}"\n[dataset]\ndirs = [{path = "{images}"}]\n'),
        FLUX_NEEDS,
    ),
    (
        "flux with sd15 options",
        with_config("[training]\nnoise_offset = 0.1\n", family="flux"),
        [
            "training.noise_offset: Flux training does not support this setting (sd-scripts would ignore or "
            "reject it); remove it"
        ],
    ),
    (
        "TE cache on sd15",
        with_config("[training]\ncache_text_encoder_outputs = true\nshuffle_tags = false\n"),
        ["training.cache_text_encoder_outputs: only SDXL and Flux can cache text encoder outputs; remove it"],
    ),
    (
        "only regularisation folders",
        with_text(
            '[model]\nfamily = "sd15"\nbase = "{base}"\n[dataset]\ndirs = [{path = "{images}", is_reg = true}]\n'
        ),
        ["dataset.dirs: every folder is is_reg = true; add a folder of training images"],
    ),
    (
        "several problems at once",
        with_config("[network]\ndim = 0\n[training]\nbatch_size = 0\n"),
        [
            "network.dim: Input should be greater than or equal to 1",
            "training.batch_size: Input should be greater than or equal to 1",
        ],
    ),
    (
        "extra arg kohya_wrap owns",
        with_config("[run]\nextra_args = {learning_rate = 0.001}\n"),
        [
            "run.extra_args.learning_rate: kohya_wrap already sets this from the config; use the matching "
            "config key instead"
        ],
    ),
    (
        "unknown extra arg",
        with_config("[run]\nextra_args = {max_grad_nrm = 1.0}\n"),
        [
            "run.extra_args.max_grad_nrm: unknown sd-scripts argument 'max_grad_nrm' for train_network.py "
            "(did you mean 'max_grad_norm'?)"
        ],
    ),
    (
        "string toml 0.10.2 misreads",
        with_config("[tagging]\ntrigger_word = '\"\"zdm'\n"),
        [
            "render: saving.metadata_trigger_phrase = '\"\"zdm' cannot be written into train.toml: toml "
            "0.10.2 cannot read back a string that starts with two double quotes; change it"
        ],
    ),
    (
        "render -o existing folder",
        with_files(existing_output, "render", "{config}", "-o", "{root}/out"),
        ["render: {root}/out already exists; choose a new folder (nothing is overwritten)"],
    ),
    ("render without a target", with_args("render", "{config}"), ["render: give either -o DIR or --new-run"]),
    (
        "render with two targets",
        with_args("render", "{config}", "-o", "{root}/out", "--new-run"),
        ["render: give either -o DIR or --new-run"],
    ),
    (
        "init -o existing file",
        with_files(existing_init_target, "init", "sd15-character", "-o", "{root}/mine.toml"),
        ["init: {root}/mine.toml already exists; choose another name or delete it first"],
    ),
    (
        "init unknown preset",
        with_args("init", "flux", "-o", "{root}/new.toml"),
        ["preset: unknown preset 'flux'; did you mean 'flux-character'? see `kohya-wrap presets`"],
    ),
    (
        "init ambiguous preset",
        with_args("init", "sdxl"),
        [
            "preset: unknown preset 'sdxl'; did you mean one of 'sdxl-illustrious-character', "
            "'sdxl-pony-character', 'sdxl-style'? see `kohya-wrap presets`"
        ],
    ),
    (
        "new run with bad config",
        with_args("render", "{config}", "--new-run", "--set", "network.alpha=-1"),
        ["network.alpha: Input should be greater than 0"],
    ),
]


@pytest.mark.parametrize(("case", "setup", "lines"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_exits_2_with_exact_lines_and_writes_nothing(
    case: str, setup: Setup, lines: list[str], project: Project
) -> None:
    args = setup(project)
    before = tree(project.root)
    contents = {p: p.read_bytes() for p in project.root.rglob("*") if p.is_file()}
    result = invoke(*args)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [line.replace("{root}", str(project.root)) for line in lines]
    assert result.stdout == ""
    assert tree(project.root) == before  # no output folder, no run folder, no temporary leftovers
    assert {p: p.read_bytes() for p in project.root.rglob("*") if p.is_file()} == contents


def test_there_are_at_least_25_bad_input_cases() -> None:
    assert len(BAD_INPUT) >= 25


# ---- start-up cost: --help and validate import no heavy modules ---------------------------------------

HEAVY = ("torch", "onnxruntime", "rich")
PROBE = """
import sys
from kohya_wrap.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
except SystemExit:
    pass
print("HEAVY", sorted(m for m in {heavy!r} if m in sys.modules))
"""


@pytest.mark.parametrize(
    "args",
    [["--help"], ["validate", "CONFIG"], ["presets"], ["validate", "--help"]],
    ids=["help", "validate", "presets", "validate-help"],
)
def test_light_commands_import_no_heavy_module(args: list[str], project: Project) -> None:
    argv = [str(project.config) if a == "CONFIG" else a for a in args]
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv],
        capture_output=True,
        text=True,
        check=False,
        cwd=project.root,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "HEAVY []"
    if args == ["validate", "CONFIG"]:
        assert done.stdout.splitlines()[0] == "ok: sd15 LoRA 'zdm', 3 images × repeats = 60, batch 2, 10 epochs"


def test_the_templates_folder_is_the_one_tested() -> None:
    assert templates_dir() == (Path(__file__).resolve().parent.parent / "templates").resolve()
