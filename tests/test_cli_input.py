"""Input a new user gets wrong: every refusal is one line, exit 2, and leaves every file as it was."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from filetree import snapshot
from sample_data import config_text, write_images, write_models

from kohya_wrap.cli import main


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path with stand-in models, a captioned folder `images` and `config.toml`; the working folder."""
    monkeypatch.chdir(tmp_path)
    models = write_models(tmp_path / "models")
    write_images(tmp_path / "images", [(64, 64)] * 3)
    (tmp_path / "config.toml").write_text(config_text("sd15", models, [tmp_path / "images"]), encoding="utf-8")
    return tmp_path


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def refused(root: Path, *args: str | Path) -> str:
    """Run a command that must exit 2 and change nothing under `root`; its stderr."""
    before = snapshot(root)
    done = invoke(*args)
    assert done.exit_code == 2, done.output
    assert snapshot(root) == before
    return done.stderr


# ---- validate reads the dataset the way sd-scripts will ------------------------------------------


def test_validate_refuses_a_caption_that_is_not_utf8(project: Path) -> None:
    (project / "images" / "01.txt").write_bytes("zdm, caf\xe9\n".encode("latin-1"))
    assert refused(project, "validate", "config.toml") == (
        "dataset.dirs.0.path: captions that are not UTF-8 text (sd-scripts reads UTF-8 only and stops on them): "
        "01.txt; save them as UTF-8\n"
    )


def test_validate_refuses_a_broken_image_link(project: Path) -> None:
    (project / "images" / "03.png").symlink_to(project / "gone.png")
    assert refused(project, "validate", "config.toml") == (
        "dataset.dirs.0.path: links to missing images (sd-scripts would list them and then stop): 03.png; "
        "fix or remove them\n"
    )


def test_validate_warns_that_sd_scripts_reads_only_the_first_caption_line(project: Path) -> None:
    (project / "images" / "00.txt").write_text("zdm, 1boy\nsmile, standing\n", encoding="utf-8")
    (project / "images" / "01.txt").write_bytes("\ufeffzdm, 1boy\n".encode())
    done = invoke("validate", "config.toml")
    assert done.exit_code == 0, done.output
    assert done.stderr == (
        "warning: dataset.dirs.0.path: 1 captions have several lines and sd-scripts trains on the first line only: "
        "00.txt; put all tags on one line\n"
        "warning: dataset.dirs.0.path: 1 captions start with a byte-order mark, which sd-scripts keeps as part of "
        "the first tag: 01.txt; save them as UTF-8 without BOM\n"
    )


# ---- output paths: one line instead of a traceback -----------------------------------------------


def test_render_into_a_folder_under_a_file_is_one_line(project: Path) -> None:
    (project / "file").write_text("")
    out = project / "file" / "out"
    assert refused(project, "render", "config.toml", "-o", out) == (
        f"render: {project / 'file'} is a file, so {out} cannot be created inside it; choose another folder\n"
    )


def test_init_into_a_path_under_a_file_is_one_line(project: Path) -> None:
    (project / "file").write_text("")
    out = project / "file" / "mine.toml"
    assert refused(project, "init", "sd15-character", "-o", out) == (
        f"init: {project / 'file'} is a file, so {out} cannot be created inside it; choose another path\n"
    )


@pytest.fixture
def read_only(project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder nobody may write in (as root, where the mode does not stop us, `os.access` says so too)."""
    import kohya_wrap.files

    folder = project / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    real = os.access

    def access(path: str | os.PathLike[str], mode: int, **kwargs: object) -> bool:
        if Path(path) == folder and mode & os.W_OK:
            return False
        return real(path, mode)

    monkeypatch.setattr(kohya_wrap.files.os, "access", access)
    yield folder
    folder.chmod(0o755)


def test_outputs_in_a_read_only_folder_are_one_line_and_write_nothing(project: Path, read_only: Path) -> None:
    assert refused(project, "render", "config.toml", "-o", read_only / "out") == (
        f"render: cannot write in {read_only} (permission denied); choose another folder\n"
    )
    assert refused(project, "init", "sd15-character", "-o", read_only / "mine.toml") == (
        f"init: cannot write in {read_only} (permission denied); choose another path\n"
    )
    assert refused(project, "render", "config.toml", "--new-run", "--set", 'run.runs_dir="read-only/runs"') == (
        f"run.runs_dir: cannot write in {read_only} (permission denied); set run.runs_dir to a folder you can "
        "write in\n"
    )
    assert list(read_only.iterdir()) == []


def test_a_runs_dir_under_a_file_is_one_line(project: Path) -> None:
    (project / "file").write_text("")
    assert refused(project, "render", "config.toml", "--new-run", "--set", 'run.runs_dir="file/runs"') == (
        f"run.runs_dir: {project / 'file'} is a file, so {project / 'file' / 'runs'} cannot be created inside it; "
        "set run.runs_dir to a folder you can write in\n"
    )
    assert refused(project, "render", "config.toml", "--new-run", "--set", 'run.runs_dir="file"') == (
        f"run.runs_dir: {project / 'file'} is a file; set run.runs_dir to a folder\n"
    )


# ---- run folders -----------------------------------------------------------------------------------


def test_resume_on_a_file_is_one_line(project: Path) -> None:
    (project / "run.json").write_text("{}")
    assert refused(project, "train", "--resume", "run.json") == (
        f"run: {project / 'run.json'} is a file, not a run folder; give the folder that holds run.json\n"
    )


def test_a_refused_resume_writes_no_report(project: Path) -> None:
    assert invoke("render", "config.toml", "--new-run").exit_code == 0
    (run,) = (project / "runs").iterdir()
    message = refused(project, "train", "--resume", run)
    assert message.count("\n") == 1 and message.startswith("resume: ")
    assert not (run / "report").exists()


def test_runs_lists_every_run_and_marks_a_run_json_without_its_fields(project: Path) -> None:
    for _ in range(2):
        assert invoke("render", "config.toml", "--new-run").exit_code == 0
    first, second = sorted((project / "runs").iterdir())
    (second / "run.json").write_text('{"status": "finished"}', encoding="utf-8")
    done = invoke("runs", "--runs-dir", "runs")
    assert done.exit_code == 0, done.output
    lines = done.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{first.name:40} planned      sd15 ")
    assert lines[1] == f"{second.name:40} unreadable run.json"
    assert refused(project, "outputs", second) == (
        f"run: {second / 'run.json'} is not a run record kohya-wrap can read (no name)\n"
    )


# ---- values ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["-5", "nan", "inf", "0"])
def test_estimate_refuses_a_free_vram_that_is_not_a_size(project: Path, value: str) -> None:
    shown = str(float(value))
    assert refused(project, "estimate", "config.toml", "--free-vram", value) == (
        f"--free-vram: must be the GPU's free memory in GB (a number above 0), got {shown}\n"
    )


@pytest.mark.parametrize(
    ("precision", "family_note"),
    [
        ("bf16", 'SD1.5\'s text encoder stops in bf16 ("mixed dtype (CPU)")'),
        ("fp16", "accelerate refuses fp16 without a GPU"),
    ],
)
def test_mixed_precision_is_refused_before_launch_when_sd_scripts_sees_no_gpu(
    project: Path, precision: str, family_note: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No GPU here, whatever the test machine has: nvidia-smi fails and the interpreter sees no CUDA.
    bin_dir = project / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\nexit 9\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    sd = project / "sd-scripts"
    sd.mkdir()
    (sd / "train_network.py").write_text("")
    python = project / "cpu-python"
    python.write_text("#!/bin/sh\necho 'KOHYA_WRAP_CUDA False'\n")
    python.chmod(0o755)
    args = ["--set", f'run.sd_scripts_dir="{sd}"', "--set", f'run.python="{python}"']
    assert refused(project, "train", "config.toml", *args, "--set", f'training.mixed_precision="{precision}"') == (
        f'training.mixed_precision: "{precision}" cannot run here: sd-scripts sees no CUDA GPU, so it would train on '
        f'the CPU, where {family_note}; set training.mixed_precision = "no"\n'
    )


# ---- the config file ---------------------------------------------------------------------------------


def test_a_config_saved_with_a_byte_order_mark_is_read(project: Path) -> None:
    config = project / "config.toml"
    config.write_bytes(b"\xef\xbb\xbf" + config.read_bytes())
    done = invoke("validate", config)
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith("ok: sd15 LoRA 'images', 3 images")


def test_an_empty_dataset_path_is_refused(project: Path) -> None:
    config = project / "config.toml"
    text = config.read_text(encoding="utf-8").replace(f'path = "{project / "images"}"', 'path = ""')
    config.write_text(text, encoding="utf-8")
    assert refused(project, "validate", config) == (
        "dataset.dirs.0.path: must name an image folder (an empty path would be the config's own folder)\n"
    )


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("config_file", '"other.toml"', "it would replace the train.toml kohya_wrap renders from this config"),
        ("dataset_config", '"d.toml"', "it would replace the dataset.toml kohya_wrap renders from [dataset]"),
        (
            "output_config",
            "true",
            "sd-scripts would only write its config (refusing, as train.toml exists) and not train",
        ),
        (
            "train_data_dir",
            '"imgs"',
            "sd-scripts ignores it next to the dataset.toml kohya_wrap renders; use dataset.dirs",
        ),
    ],
)
def test_extra_args_that_would_replace_the_rendered_files_are_refused(
    project: Path, key: str, value: str, why: str
) -> None:
    assert refused(project, "validate", "config.toml", "--set", f"run.extra_args.{key}={value}") == (
        f"run.extra_args.{key}: {why}; remove it\n"
    )


def test_a_preset_that_names_another_builds_on_it(
    project: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kohya_wrap.config.presets import load_config

    templates = tmp_path_factory.mktemp("templates")
    (templates / "inner.toml").write_text("# Inner.\n[network]\ndim = 8\n[training]\nepochs = 3\n", encoding="utf-8")
    (templates / "outer.toml").write_text('# Outer.\npreset = "inner"\n[training]\nepochs = 5\n', encoding="utf-8")
    monkeypatch.setenv("KOHYA_WRAP_TEMPLATES", str(templates))
    cfg = load_config(project / "config.toml", preset="outer").config
    assert (cfg.network.dim, cfg.training.epochs, cfg.preset) == (8, 5, "outer")

    (templates / "inner.toml").write_text('# Inner.\npreset = "outer"\n', encoding="utf-8")
    assert refused(project, "validate", "config.toml", "--preset", "outer") == (
        "preset inner: presets name each other in a loop (outer → inner → outer)\n"
    )


# ---- the property: a command that exits 2 has written nothing ------------------------------------


def _setting_keys() -> list[str]:
    """Every `section.key` of the config file."""
    from pydantic import BaseModel

    from kohya_wrap.config.models import Settings

    keys = []
    for section, field in Settings.model_fields.items():
        model = next(
            (a for a in (field.annotation, *getattr(field.annotation, "__args__", ())) if isinstance(a, type)), None
        )
        if model is not None and issubclass(model, BaseModel):
            keys += [f"{section}.{key}" for key in model.model_fields]
    return keys


@pytest.mark.parametrize("key", _setting_keys())
@pytest.mark.parametrize("command", [["render", "--new-run"], ["train", "--dry-run"], ["validate"]])
def test_every_refused_setting_writes_nothing(project: Path, key: str, command: list[str]) -> None:
    # An inline table is the wrong type for every setting but the few that are tables themselves; those
    # refuse a table as a value inside it.
    before = snapshot(project)
    done = invoke(command[0], "config.toml", *command[1:], "--set", f"{key}={{ not_a_setting = {{ nested = true }} }}")
    assert done.exit_code == 2, done.output
    assert done.stderr.count("\n") >= 1 and "Traceback" not in done.output
    assert snapshot(project) == before
