"""Real LoRA training through the real sd-scripts on the CPU with a random model, via `kohya-wrap train`."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e_assets import e2e_config_text

from kohya_wrap.train import events as ev

pytestmark = pytest.mark.sd_scripts


def write_config(
    tmp_path: Path,
    assets,  # type: ignore[no-untyped-def]
    model: Path,
    family: str = "sd15",
    epochs: int = 2,
    precision: str = "no",
) -> Path:
    """The e2e config (the one `make demo` trains too) over a copy of the images in `tmp_path`."""
    images = tmp_path / "data" / "e2etok"
    shutil.copytree(assets.images, images)
    config = tmp_path / "e2e.toml"
    text = e2e_config_text(
        model, assets.tokenizers, images, tmp_path / "runs", family=family, epochs=epochs, precision=precision
    )
    config.write_text(text, encoding="utf-8")
    return config


def kohya_wrap(*args: str) -> list[str]:
    return [sys.executable, "-m", "kohya_wrap", *args]


def only_run(tmp_path: Path) -> Path:
    runs = [p for p in (tmp_path / "runs").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(runs) == 1
    return runs[0]


def events_of(run: Path) -> list[ev.Event]:
    return [ev.from_json(line) for line in (run / "events.jsonl").read_text("utf-8").splitlines()]


def assert_trained(run: Path, epochs: int, steps: int) -> None:
    record = json.loads((run / "run.json").read_text("utf-8"))
    assert record["status"] == "finished", record
    assert record["exit_code"] == 0
    out = run / "output"
    numbered = [f"e2e_lora-{e:06d}.safetensors" for e in range(1, epochs)]
    assert sorted(p.name for p in out.glob("*.safetensors")) == sorted([*numbered, "e2e_lora.safetensors"])
    samples = sorted(p.name for p in (out / "sample").glob("*.png"))
    for epoch in range(1, epochs + 1):
        for prompt in (0, 1):
            assert any(name.startswith(f"e2e_lora_e{epoch:06d}_{prompt:02d}_") for name in samples), samples
    events = events_of(run)
    started = [e for e in events if isinstance(e, ev.RunStarted)]
    assert started and started[-1].total_steps == steps
    step_events = [e for e in events if isinstance(e, ev.Step)]
    assert step_events[-1].step == steps and step_events[-1].total == steps
    saved = [e for e in events if isinstance(e, ev.CheckpointSaved)]
    assert sorted(e.epoch for e in saved if e.epoch is not None) == list(range(1, epochs + 1))
    finished = [e for e in events if isinstance(e, ev.RunFinished)]
    assert finished[-1].success


def test_sd15_trains_two_epochs(tmp_path: Path, e2e_assets) -> None:  # type: ignore[no-untyped-def]
    config = write_config(tmp_path, e2e_assets, e2e_assets.sd15_model)
    proc = subprocess.run(kohya_wrap("train", str(config), "--json"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run(tmp_path)
    assert_trained(run, epochs=2, steps=8)
    # --json streams exactly what events.jsonl holds.
    streamed = [json.loads(line)["kind"] for line in proc.stdout.splitlines() if line.startswith("{")]
    assert streamed == [json.loads(line)["kind"] for line in (run / "events.jsonl").read_text().splitlines()]


def test_sd15_interrupted_then_resumed(tmp_path: Path, e2e_assets) -> None:  # type: ignore[no-untyped-def]
    config = write_config(tmp_path, e2e_assets, e2e_assets.sd15_model, epochs=3)
    proc = subprocess.Popen(
        kohya_wrap("train", str(config)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and proc.poll() is None:
        # Epoch 1 is complete once its last sample exists (sd-scripts saves, then samples).
        if (tmp_path / "runs").exists() and list((tmp_path / "runs").glob("*/output/sample/e2e_lora_e000001_01_*")):
            break
        time.sleep(0.2)
    time.sleep(1.0)
    # Ctrl-C reaches the foreground process group: here, kohya-wrap's own group.
    os.killpg(proc.pid, signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output[-3000:]
    assert "--resume" in output
    run = only_run(tmp_path)
    record = json.loads((run / "run.json").read_text("utf-8"))
    assert record["status"] == "interrupted"
    assert (run / "output" / "e2e_lora-000001.safetensors").exists()

    resumed = subprocess.run(kohya_wrap("train", "--resume", str(run)), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert_trained(run, epochs=3, steps=12)
    assert json.loads((run / "run.json").read_text("utf-8"))["attempts"] == 2


def test_missing_base_model_is_one_clear_line(tmp_path: Path, e2e_assets) -> None:  # type: ignore[no-untyped-def]
    config = write_config(tmp_path, e2e_assets, tmp_path / "nowhere.safetensors")
    proc = subprocess.run(kohya_wrap("train", str(config)), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"model.base: not found: {tmp_path / 'nowhere.safetensors'}; fix model.base (a .safetensors file or a "
        "diffusers folder)"
    )
    assert not (tmp_path / "runs").exists()


def native_bf16() -> bool:
    """Whether this machine runs bf16 faster than fp32 (a GPU, or a CPU with AVX512-BF16/AMX), by `train`'s probe.

    Stricter than `train`, which refuses only bf16 that crawls: AVX-512 without its bf16 extension emulates it
    at 2-9× the cost of fp32 (measured with ONEDNN_MAX_CPU_ISA=AVX512_CORE), too slow for this test's budget.
    """
    from kohya_wrap.train.doctor import cpu_probe

    found = cpu_probe(sys.executable)
    assert found is not None, "the probe did not run in this interpreter"
    return found.cuda or (found.bf16_slowdown is not None and found.bf16_slowdown < 1.0)


@pytest.mark.skipif(platform.machine() != "x86_64" or shutil.which("nvidia-smi") is not None, reason="x86 CPU only")
def test_bf16_on_a_cpu_without_native_bf16_is_refused_before_the_run(tmp_path: Path, e2e_assets) -> None:  # type: ignore[no-untyped-def]
    # oneDNN limited to AVX2 runs bf16 the way a CPU without AVX512-BF16/AMX does: through reference kernels.
    config = write_config(tmp_path, e2e_assets, e2e_assets.sd15_model, family="sdxl", precision="bf16")
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    proc = subprocess.run(kohya_wrap("train", str(config)), capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith('training.mixed_precision: "bf16" cannot run here: sd-scripts sees no CUDA GPU'), line
    assert "bf16 has no native support (AVX512-BF16 or AMX)" in line and line.endswith('mixed_precision = "no"')
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_sdxl_trains(tmp_path: Path, e2e_assets, e2e_sdxl_model: Path) -> None:  # type: ignore[no-untyped-def]
    # bf16 where it runs natively (the precision SDXL users train in); fp32 on a CPU that would emulate bf16,
    # which `train` refuses (the test above) because an 8-step run would take half an hour.
    precision = "bf16" if native_bf16() else "no"
    config = write_config(tmp_path, e2e_assets, e2e_sdxl_model, family="sdxl", precision=precision)
    proc = subprocess.run(
        kohya_wrap("train", str(config), "--set", "training.gradient_checkpointing=false"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert_trained(only_run(tmp_path), epochs=2, steps=8)
    # The same run proves the SDXL LoRA loads where users take it: ComfyUI's key names, diffusers.
    from test_loracheck import assert_sdxl_lora_loads

    assert_sdxl_lora_loads(only_run(tmp_path) / "output" / "e2e_lora.safetensors", e2e_sdxl_model)


def test_lora_metadata_carries_our_config_hash(tmp_path: Path, e2e_assets) -> None:  # type: ignore[no-untyped-def]
    from kohya_wrap.review.outputs import collect, read_metadata
    from kohya_wrap.train.layout import RunLayout
    from kohya_wrap.train.runs import read_record

    config = write_config(tmp_path, e2e_assets, e2e_assets.sd15_model, epochs=1)
    proc = subprocess.run(
        kohya_wrap("train", str(config), "--set", "sampling.prompts=[]"), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    layout = RunLayout(only_run(tmp_path))
    record = read_record(layout)
    (lora,) = collect(layout, "e2e_lora", record.epochs)
    meta = read_metadata(lora.path)
    assert meta["ss_training_comment"] == f"kohya_wrap config {record.config_hash}"
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2.0"
    assert meta["ss_num_epochs"] == "1" and meta["ss_output_name"] == "e2e_lora"
