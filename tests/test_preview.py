"""Tests for kohya_wrap.review.preview: the gen_img.py command, the epoch × weight grid, failures, a real CPU run."""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from real_run import RealRuns, real_runs
from synthetic_run import grid_geometry, pixel, write_run

from kohya_wrap.cli import main
from kohya_wrap.config.presets import validate
from kohya_wrap.errors import ConfigError, SdScriptsError
from kohya_wrap.review.preview import PreviewOptions, plan_preview, run_preview
from kohya_wrap.train.layout import RunLayout
from kohya_wrap.train.runs import read_record

# Stands in for sd-scripts' gen_img.py: reads the same arguments and prompt file, and paints each image
# in a colour that says which network (epoch) it used at which weight.
FAKE_GEN_IMG = """
import argparse, os, re, sys
from PIL import Image
parser = argparse.ArgumentParser()
parser.add_argument("--outdir")
parser.add_argument("--from_file")
args, _ = parser.parse_known_args()
if os.environ.get("FAKE_GEN_IMG_FAIL"):
    print("Traceback (most recent call last):\\nRuntimeError: no GPU today", flush=True)
    sys.exit(1)
for line in open(args.from_file, encoding="utf-8").read().splitlines():
    options = dict(part.split(" ", 1) for part in line.split(" --")[1:])
    muls = [float(m) for m in options["am"].split(",")]
    network = next(i for i, m in enumerate(muls) if m)
    size = (int(options["w"]), int(options["h"]))
    colour = (int(250 * muls[network]), 60 * network, 100)
    Image.new("RGB", size, colour).save(os.path.join(args.outdir, options["f"]))
    print("network mul:", muls, flush=True)
"""


def fake_colour(network: int, weight: float) -> tuple[int, int, int]:
    return (int(250 * weight), 60 * network, 100)


def use_config(layout: RunLayout, sd_scripts: Path, family: str = "sd15") -> None:
    """A config.toml that validates, pointing at a stand-in sd-scripts folder."""
    flux = 'clip_l = "c"\nt5xxl = "t"\nae = "a"\n' if family == "flux" else ""
    layout.config.write_text(
        f'[model]\nfamily = "{family}"\nbase = "/models/base.safetensors"\n'
        f'tokenizer_cache_dir = "/tok"\n{flux}'
        '[dataset]\ndirs = [{ path = "/data/10_zdm" }]\n'
        '[training]\nmixed_precision = "fp16"\n[sampling]\nsampler = "euler_a"\n[save]\noutput_name = "zdm"\n'
        f'[run]\nsd_scripts_dir = "{sd_scripts}"\npython = "{sys.executable}"\n',
        encoding="utf-8",
    )


@pytest.fixture
def run(tmp_path: Path) -> RunLayout:
    sd_scripts = tmp_path / "sd-scripts"
    sd_scripts.mkdir()
    (sd_scripts / "gen_img.py").write_text(FAKE_GEN_IMG, encoding="utf-8")
    layout = write_run(tmp_path / "zdm-20260101-120000")
    use_config(layout, sd_scripts)
    return layout


def test_plan_is_one_gen_img_call_with_every_epoch_loaded_once(run: RunLayout, tmp_path: Path) -> None:

    cfg = validate(tomllib.loads(run.config.read_text("utf-8")))
    plan = plan_preview(cfg, run, read_record(run), tmp_path / "out", PreviewOptions([1, 3], [0.7, 1.0]))
    output = run.output_dir
    assert plan.launch.argv == (
        sys.executable,
        "gen_img.py",
        "--v1",
        "--ckpt",
        "/models/base.safetensors",
        "--outdir",
        str(tmp_path / "out"),
        "--from_file",
        str(tmp_path / "out" / "prompts.txt"),
        "--images_per_prompt",
        "1",
        "--batch_size",
        "1",
        "--sampler",
        "euler_a",
        "--network_module",
        "networks.lora",
        "networks.lora",
        "--network_weights",
        str(output / "zdm-000001.safetensors"),
        str(output / "zdm.safetensors"),
        "--network_mul",
        "0",
        "0",
        "--fp16",
        "--clip_skip",
        "2",
        "--sdpa",
        "--tokenizer_cache_dir",
        "/tok",
    )
    assert plan.launch.cwd == (tmp_path / "sd-scripts").resolve()
    # The run's first sample prompt, with its size, steps, scale and seed; the same seed in every cell.
    line = "zdm, 1boy, a red square --w 64 --h 48 --s 20 --l 7 --d 1"
    assert plan.prompt_lines.splitlines() == [
        f"{line} --am 0.7,0 --f e000001_w0.7_p00.png",
        f"{line} --am 1,0 --f e000001_w1_p00.png",
        f"{line} --am 0,0.7 --f e000003_w0.7_p00.png",
        f"{line} --am 0,1 --f e000003_w1_p00.png",
    ]


def test_preview_grid_rows_are_epochs_and_columns_weights(run: RunLayout) -> None:
    notes: list[str] = []
    png = run_preview(run.root, PreviewOptions([2, 3], [0.5, 1.0]), note=notes.append)
    assert png == run.report_dir / "preview.png"
    assert notes == [
        f"preview: rendering 4 images (epochs 2, 3 × weights 0.5, 1) with gen_img.py; output in "
        f"{run.report_dir / 'preview.log'}"
    ]
    image = Image.open(png)
    header, label = grid_geometry(image, 2, 2)
    for row in range(2):
        for column, weight in enumerate((0.5, 1.0)):
            assert pixel(image, row, column, header, label) == fake_colour(row, weight)
    assert sorted(p.name for p in (run.report_dir / "preview").iterdir()) == [
        "e000002_w0.5_p00.png",
        "e000002_w1_p00.png",
        "e000003_w0.5_p00.png",
        "e000003_w1_p00.png",
        "prompts.txt",
    ]
    meta = json.loads((run.report_dir / "preview.json").read_text("utf-8"))
    assert (meta["epochs"], meta["weights"], meta["steps"], meta["seed"]) == ([2, 3], [0.5, 1.0], 20, 1)
    page = (run.report_dir / "index.html").read_text("utf-8")
    assert "<img src='preview.png'" in page
    assert (
        "Epochs 2, 3 at weights 0.5, 1; 20 steps, seed 1, euler_a.</p>\n"
        "<p class='muted'>zdm, 1boy, a red square</p>" in page
    )
    assert "network mul: [0.0, 1.0]" in (run.report_dir / "preview.log").read_text("utf-8")


def test_several_prompts_get_a_row_each(run: RunLayout) -> None:
    png = run_preview(run.root, PreviewOptions([3], [1.0], texts=["zdm, smiling", "zdm, running"], steps=8, seed=7))
    image = Image.open(png)
    header, label = grid_geometry(image, 2, 1)
    assert header > 0 and label > 0
    lines = (run.report_dir / "preview" / "prompts.txt").read_text("utf-8").splitlines()
    assert lines == [
        "zdm, smiling --w 64 --h 48 --s 8 --l 7 --d 7 --am 1 --f e000003_w1_p00.png",
        "zdm, running --w 64 --h 48 --s 8 --l 7 --d 7 --am 1 --f e000003_w1_p01.png",
    ]


def test_default_epochs_are_the_last_three_saved(run: RunLayout) -> None:
    (run.output_dir / "zdm-000004.safetensors").write_bytes(b"")
    run_preview(run.root, PreviewOptions(weights=[1.0]))
    assert json.loads((run.report_dir / "preview.json").read_text("utf-8"))["epochs"] == [2, 3, 4]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": [5]}, "preview: --epochs 5: no LoRA saved for that epoch; saved epochs: 1, 2, 3"),
        (
            {"texts": ["a --n b"]},
            "preview: the prompt cannot contain ' --' or a line break (gen_img.py reads them as "
            "options or a new prompt)",
        ),
    ],
)
def test_bad_choices_are_one_line(run: RunLayout, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        run_preview(run.root, PreviewOptions(**kwargs))  # type: ignore[arg-type]
    assert caught.value.lines == (message,)
    assert not any(p.name.startswith(".preview-") for p in run.report_dir.iterdir())


def test_flux_is_refused(run: RunLayout, tmp_path: Path) -> None:
    use_config(run, tmp_path / "sd-scripts", family="flux")
    with pytest.raises(ConfigError, match="Flux LoRAs cannot be previewed yet"):
        run_preview(run.root)


def test_a_failed_generation_keeps_the_previous_preview(run: RunLayout, monkeypatch: pytest.MonkeyPatch) -> None:
    run_preview(run.root, PreviewOptions([3], [1.0]))
    before = (run.report_dir / "preview.png").read_bytes()
    monkeypatch.setenv("FAKE_GEN_IMG_FAIL", "1")
    with pytest.raises(SdScriptsError) as caught:
        run_preview(run.root, PreviewOptions([1, 2], [0.5]))
    assert caught.value.lines[0] == (
        f"preview: gen_img.py exited with 1 and wrote 0 of 2 images; last lines of {run.report_dir / 'preview.log'}:"
    )
    assert caught.value.lines[-1] == "  RuntimeError: no GPU today"
    assert (run.report_dir / "preview.png").read_bytes() == before
    assert sorted(p.name for p in (run.report_dir / "preview").iterdir()) == [
        "e000003_w1_p00.png",
        "prompts.txt",
    ]


def test_preview_command(run: RunLayout) -> None:
    result = CliRunner().invoke(
        main, ["preview", str(run.root), "--epochs", "1,3", "--weights", "0.8"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"preview: {run.report_dir / 'preview.png'}",
        f"report: {run.report_dir / 'index.html'}",
    ]
    result = CliRunner().invoke(main, ["preview", str(run.root), "--weights", "0.8,x"], catch_exceptions=False)
    assert (result.exit_code, result.stderr) == (
        2,
        "preview: --weights takes numbers separated by commas, not '0.8,x'\n",
    )


# ---- the real CPU run -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory, e2e_assets: object) -> RealRuns:
    return real_runs(tmp_path_factory, e2e_assets)


@pytest.mark.sd_scripts
def test_real_preview_with_gen_img(real: RealRuns) -> None:
    png = run_preview(real.run, PreviewOptions([1, 2], [0.5, 1.0], steps=2))
    image = Image.open(png)
    header, label = grid_geometry(image, 2, 2)
    assert 0 < header < 60 and 0 < label < 150
    folder = real.run / "report" / "preview"
    cells = {
        name: np.asarray(Image.open(folder / name), dtype=np.int16)
        for name in (
            "e000001_w0.5_p00.png",
            "e000001_w1_p00.png",
            "e000002_w0.5_p00.png",
            "e000002_w1_p00.png",
        )
    }
    assert all(cell.shape == (64, 64, 3) for cell in cells.values())
    # The same seed everywhere: only the LoRA's epoch and weight change the image, and they do.
    assert np.abs(cells["e000002_w1_p00.png"] - cells["e000002_w0.5_p00.png"]).max() > 0
    assert np.abs(cells["e000002_w1_p00.png"] - cells["e000001_w1_p00.png"]).max() > 0
    assert "<img src='preview.png'" in (real.run / "report" / "index.html").read_text("utf-8")
