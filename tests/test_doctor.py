"""Tests for kohya_wrap.train.doctor: each pre-flight check, the interpreter probe and the whole diagnosis."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from kohya_wrap.commands.setup import doctor
from kohya_wrap.config.models import Config
from kohya_wrap.config.presets import LoadedConfig, validate
from kohya_wrap.train.doctor import (
    Check,
    CpuProbe,
    check_checkout,
    check_config,
    check_interpreter,
    check_model_files,
    cpu_precision_problem,
    cpu_probe,
    diagnose,
    model_file_problems,
    probe,
)

GOOD = {
    "python": "3.11.9",
    "torch": "2.6.0",
    "accelerate": "1.6.0",
    "transformers": "4.54.1",
    "bitsandbytes": "0.45.0",
    "cuda": True,
    "gpu": "NVIDIA RTX 4090",
    "gpu_count": 1,
    "vram_free_gb": 22.5,
    "vram_total_gb": 23.6,
    "bf16": True,
    "train_util": True,
}


def config(tmp_path: Path, family: str = "sd15", **sections: dict[str, Any]) -> Config:
    model = {"family": family, "base": str(tmp_path / "base.safetensors"), **sections.pop("model", {})}
    return validate({"model": model, "dataset": {"dirs": [{"path": str(tmp_path / "data")}]}, **sections})


def fake_python(tmp_path: Path, output: str, stderr: str = "", code: int = 0) -> Path:
    """An 'interpreter' that prints what the probe would, without importing torch."""
    script = tmp_path / "python"
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}\nEOF\necho '{stderr}' >&2\nexit {code}\n", "utf-8")
    script.chmod(0o755)
    return script


def test_probe_reads_the_interpreters_answer(tmp_path: Path) -> None:
    python = fake_python(tmp_path, "some warning\nKOHYA_WRAP_PROBE " + json.dumps(GOOD))
    assert probe(str(python), tmp_path) == GOOD


def test_probe_of_an_interpreter_that_fails_keeps_its_last_error_line(tmp_path: Path) -> None:
    python = fake_python(tmp_path, "", stderr="ModuleNotFoundError: No module named json", code=1)
    assert probe(str(python), tmp_path) == {"error": "ModuleNotFoundError: No module named json"}
    assert "error" in probe(str(tmp_path / "missing-python"), tmp_path)


def test_checkout_missing_and_not_at_the_pinned_commit(tmp_path: Path) -> None:
    assert check_checkout(tmp_path) == [
        Check(
            "sd-scripts",
            "fail",
            f"no sd-scripts checkout at {tmp_path}",
            "run `make setup` (fetches the vendor/sd-scripts submodule) or set run.sd_scripts_dir",
        )
    ]
    (tmp_path / "train_network.py").write_text("")
    [check] = check_checkout(tmp_path)
    assert (check.level, check.fix) == ("warn", "run `git submodule update vendor/sd-scripts`")
    assert check.detail.startswith(f"{tmp_path} is at an unknown commit, kohya_wrap is checked against ")


def test_a_good_interpreter_passes() -> None:
    assert check_interpreter(GOOD, "/venv/bin/python") == [
        Check("python", "ok", "/venv/bin/python (Python 3.11.9)"),
        Check("gpu", "ok", "NVIDIA RTX 4090 ×1, 22.5 of 23.6 GiB free, bf16 yes"),
        Check("sd-scripts import", "ok", "library.train_util imports"),
    ]


@pytest.mark.parametrize(
    ("change", "name", "level", "detail"),
    [
        ({"torch": None}, "torch", "fail", "torch is not installed"),
        (
            {"cuda": False},
            "gpu",
            "warn",
            "torch 2.6.0 sees no CUDA GPU: training runs on the CPU (hours for real models)",
        ),
        ({"transformers": "5.0.0"}, "transformers", "fail", "transformers 5.0.0 breaks sd-scripts"),
        (
            {"train_util": "ImportError: no toml"},
            "sd-scripts import",
            "fail",
            "library.train_util does not import: ImportError: no toml",
        ),
    ],
)
def test_interpreter_problems_are_named(change: dict[str, Any], name: str, level: str, detail: str) -> None:
    checks = {c.name: c for c in check_interpreter({**GOOD, **change}, "py")}
    assert (checks[name].level, checks[name].detail) == (level, detail)


def test_an_interpreter_that_did_not_run_is_one_failure() -> None:
    assert check_interpreter({"error": "boom"}, "py") == [
        Check(
            "interpreter",
            "fail",
            "py did not run: boom",
            "set run.python to a Python with sd-scripts' requirements, or run `make setup`",
        )
    ]


def test_model_files_missing_local_and_from_the_hub(tmp_path: Path) -> None:
    cfg = config(tmp_path, model={"vae": "madebyollin/sdxl-vae-fp16-fix"})
    assert check_model_files(cfg) == [
        Check(
            "model.base",
            "fail",
            f"not found: {tmp_path / 'base.safetensors'}",
            "fix model.base (a .safetensors file or a diffusers folder)",
        ),
        Check(
            "model.vae",
            "warn",
            "'madebyollin/sdxl-vae-fp16-fix' is not a local path, so sd-scripts will download it from the "
            "Hugging Face hub",
            "download it once and point the config at the file",
        ),
    ]
    assert model_file_problems(cfg) == [
        f"model.base: not found: {tmp_path / 'base.safetensors'}; fix model.base (a .safetensors file or a "
        "diffusers folder)"
    ]
    (tmp_path / "base.safetensors").write_bytes(b"x")
    assert model_file_problems(cfg) == []


def test_config_checks_against_what_the_interpreter_has(tmp_path: Path) -> None:
    (tmp_path / "base.safetensors").write_bytes(b"x")
    cfg = config(
        tmp_path,
        optimizer={"type": "Prodigy", "learning_rate": 1.0},
        training={"attention": "xformers", "mixed_precision": "bf16"},
        run={"runs_dir": str(tmp_path / "runs")},
    )
    checks = {c.name: c for c in check_config(cfg, {**GOOD, "bf16": False})}
    assert checks["tokenizers"].level == "warn"
    assert checks["optimizer"] == Check(
        "optimizer",
        "fail",
        "Prodigy needs the 'prodigyopt' package",
        "pip install prodigyopt (into the sd-scripts interpreter)",
    )
    assert checks["xformers"].level == "fail"
    assert checks["precision"] == Check(
        "precision", "fail", "NVIDIA RTX 4090 has no bf16", 'set training.mixed_precision = "fp16"'
    )
    assert checks["disk"].detail.endswith(f"GiB free for {tmp_path / 'runs'}")


def test_diagnose_in_the_order_a_user_fixes_things(tmp_path: Path) -> None:
    sd = tmp_path / "sd-scripts"
    sd.mkdir()
    (sd / "train_network.py").write_text("")
    python = fake_python(tmp_path, "KOHYA_WRAP_PROBE " + json.dumps(GOOD))
    (tmp_path / "base.safetensors").write_bytes(b"x")
    cfg = config(tmp_path, run={"sd_scripts_dir": str(sd), "python": str(python), "runs_dir": str(tmp_path)})
    names = [c.name for c in diagnose(cfg)]
    assert names == [
        "sd-scripts",
        "python",
        "gpu",
        "sd-scripts import",
        "accelerate config",
        "model.base",
        "tokenizers",
        "disk",
    ]
    diagnosis = doctor(LoadedConfig(cfg))
    assert [c.name for c in diagnosis.checks] == names
    assert diagnosis.failed == ()  # the checkout is off the pinned commit: a warning, not a failure


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("KOHYA_WRAP_CUDA True", CpuProbe(cuda=True)),
        ("KOHYA_WRAP_CUDA False\nKOHYA_WRAP_BF16_SLOWDOWN 0.3", CpuProbe(cuda=False, bf16_slowdown=0.3)),
        ("warning: something\nKOHYA_WRAP_CUDA False", CpuProbe(cuda=False)),
        ("KOHYA_WRAP_CUDA False\nKOHYA_WRAP_BF16_SLOWDOWN nan?", CpuProbe(cuda=False)),
        ("Traceback: no torch", None),
    ],
)
def test_cpu_probe_reads_cuda_and_the_bf16_slowdown(tmp_path: Path, output: str, expected: CpuProbe | None) -> None:
    assert cpu_probe(str(fake_python(tmp_path, output))) == expected


def no_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\nexit 9\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.parametrize(
    ("precision", "slowdown", "refused"),
    [
        ("bf16", 240.0, True),  # emulated bf16: an SDXL step of seconds becomes minutes
        ("bf16", 0.3, False),  # native bf16 (AVX512-BF16, AMX): faster than fp32
        ("no", 240.0, False),
    ],
)
def test_sdxl_bf16_on_a_cpu_without_native_bf16_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, precision: str, slowdown: float, refused: bool
) -> None:
    no_nvidia_smi(tmp_path, monkeypatch)
    python = fake_python(tmp_path, f"KOHYA_WRAP_CUDA False\nKOHYA_WRAP_BF16_SLOWDOWN {slowdown}")
    cfg = config(tmp_path, "sdxl", training={"mixed_precision": precision}, run={"python": str(python)})
    expected = (
        'training.mixed_precision: "bf16" cannot run here: sd-scripts sees no CUDA GPU, so it would train on the '
        "CPU, where bf16 has no native support (AVX512-BF16 or AMX): a small product ran 240× slower than fp32, a "
        'model\'s larger layers slower still; set training.mixed_precision = "no"'
    )
    assert cpu_precision_problem(cfg) == (expected if refused else None)


def test_a_cuda_interpreter_is_never_refused_a_precision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_nvidia_smi(tmp_path, monkeypatch)
    python = fake_python(tmp_path, "KOHYA_WRAP_CUDA True")
    for family, precision in (("sd15", "bf16"), ("sdxl", "fp16")):
        cfg = config(tmp_path, family, training={"mixed_precision": precision}, run={"python": str(python)})
        assert cpu_precision_problem(cfg) is None
