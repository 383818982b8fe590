"""`make demo`'s config stays a valid config as the settings change (the real run is `make demo` itself)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from demo import config_text

from kohya_wrap.config.checks import advice
from kohya_wrap.config.presets import validate


def test_the_demo_config_is_valid_and_trains_in_full_precision(tmp_path: Path) -> None:
    text = config_text(tmp_path, tmp_path / "tokenizers", tmp_path / "sd15", tmp_path / "images")
    cfg = validate(tomllib.loads(text))
    assert (cfg.model.family, cfg.training.mixed_precision, cfg.training.epochs) == ("sd15", "no", 2)
    assert cfg.run.runs_dir == str(tmp_path / "runs")
    assert [p.text for p in cfg.sampling.prompts] == ["e2etok, a red square", "e2etok, a blue square"]
    assert advice(cfg) == []  # a demo that warns would teach the wrong thing
