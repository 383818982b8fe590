"""Tests for kohya_wrap.train.layout: every file of a run folder has one fixed place."""

from __future__ import annotations

from pathlib import Path

from kohya_wrap.train.layout import RunLayout


def test_every_path_of_a_run_folder(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path / "zdm-20260101-120000")
    root = layout.root
    assert {
        "config": layout.config,
        "dataset_toml": layout.dataset_toml,
        "train_toml": layout.train_toml,
        "prompts": layout.prompts,
        "accelerate": layout.accelerate,
        "command": layout.command,
        "log": layout.log,
        "events": layout.events,
        "run_json": layout.run_json,
        "output_dir": layout.output_dir,
        "logging_dir": layout.logging_dir,
        "samples_dir": layout.samples_dir,
        "report_dir": layout.report_dir,
    } == {
        "config": root / "config.toml",
        "dataset_toml": root / "dataset.toml",
        "train_toml": root / "train.toml",
        "prompts": root / "prompts.json",
        "accelerate": root / "accelerate.yaml",
        "command": root / "command.txt",
        "log": root / "train.log",
        "events": root / "events.jsonl",
        "run_json": root / "run.json",
        "output_dir": root / "output",
        "logging_dir": root / "logs",
        # sd-scripts writes samples into <output_dir>/sample.
        "samples_dir": root / "output" / "sample",
        "report_dir": root / "report",
    }


def test_a_layout_is_a_value_and_touches_no_disk(tmp_path: Path) -> None:
    a, b = RunLayout(tmp_path / "run"), RunLayout(tmp_path / "run")
    assert a == b and hash(a) == hash(b) and {a: 1}[b] == 1
    assert not (tmp_path / "run").exists()
