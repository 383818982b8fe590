"""Tests for kohya_wrap.data.tagger on a tiny generated ONNX model whose tags are known exactly."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image
from tagger_model import CHARACTER_LOOK, TAGS, build_tagger_model, quadrant_image, score, write_tags_csv

from kohya_wrap.data import tagger as tagger_module
from kohya_wrap.data.captions import BACKUP_DIR
from kohya_wrap.data.tagger import (
    INT8_FILE,
    Labels,
    TagDecoder,
    Tagger,
    TagOptions,
    preprocess,
    quantized_model,
    read_labels,
    resolve_model,
    tag_folder,
)
from kohya_wrap.errors import ConfigError, DatasetError

WHITE, BLACK = (255, 255, 255), (0, 0, 0)
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
ZUNDAMON_LOOK = [*CHARACTER_LOOK, "1boy"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tagger_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def make(model_dir: Path) -> Callable[..., Tagger]:
    def build(folder: Path = model_dir, **options: Any) -> Tagger:
        runtime = {k: options.pop(k) for k in ("batch_size", "int8", "decode_threads") if k in options}
        return Tagger(resolve_model(str(folder)), TagOptions(**options), **runtime)

    return build


def _tags(tagger: Tagger, *paths: Path) -> list[tuple[str, ...]]:
    return [r.tags for r in tagger.tag(list(paths))]


def test_read_labels(tmp_path: Path) -> None:
    write_tags_csv(tmp_path / "ok.csv")
    labels = read_labels(tmp_path / "ok.csv")
    assert labels.names[:2] == ("general", "sensitive") and labels.categories[-1] == 4
    (tmp_path / "bad.csv").write_text("id,tag\n1,a\n")
    with pytest.raises(DatasetError, match="expected the header tag_id,name,category"):
        read_labels(tmp_path / "bad.csv")


def test_resolve_model_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model.onnx").write_bytes(b"")
    with pytest.raises(DatasetError) as err:
        resolve_model(str(tmp_path / "half"))
    assert err.value.lines[0].startswith(f"tagging.model: {tmp_path / 'half'} lacks selected_tags.csv;")
    with pytest.raises(DatasetError, match="is neither a folder with model.onnx and selected_tags.csv nor a hub id"):
        resolve_model(str(tmp_path / "missing" / "deeper" / "path"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(DatasetError) as err:
        resolve_model("SmilingWolf/wd-vit-tagger-v3")
    (line,) = err.value.lines
    assert line.startswith("tagging.model: cannot get model.onnx of 'SmilingWolf/wd-vit-tagger-v3' from the Hugging")
    assert line.endswith("pass that folder (--model PATH)")


def test_preprocess_follows_the_wd14_convention(tmp_path: Path) -> None:
    Image.new("RGB", (40, 20), RED).save(tmp_path / "wide.png")
    pixels = preprocess(tmp_path / "wide.png", 8)
    assert pixels.dtype == np.float32 and pixels.shape == (8, 8, 3)
    # White padding above and below; red becomes the last channel (BGR).
    assert pixels[0].tolist() == [[255.0, 255.0, 255.0]] * 8
    assert pixels[4].tolist() == [[0.0, 0.0, 255.0]] * 8


def test_tags_in_model_order_with_trigger_first(make: Callable[..., Tagger], tmp_path: Path) -> None:
    image = quadrant_image(tmp_path / "a.png", WHITE, WHITE, BLUE, GREEN)
    assert _tags(make(trigger_word="zdm"), image) == [
        ("zdm", *ZUNDAMON_LOOK, "standing", "simple_background", "zundamon")
    ]


def test_character_tag_above_threshold_does_not_crash(make: Callable[..., Tagger], tmp_path: Path) -> None:
    # sd-scripts' script raises UnboundLocalError as soon as a character tag passes its threshold.
    image = quadrant_image(tmp_path / "a.png", GREEN, BLACK, BLACK, BLACK)
    assert score(TAGS[-1], 1.0) > 0.85
    assert _tags(make(), image) == [("suspenders", "suspender_shorts", "zundamon")]
    assert _tags(make(character_threshold=0.9), image) == [("suspenders", "suspender_shorts")]


def test_thresholds(make: Callable[..., Tagger], tmp_path: Path) -> None:
    image = quadrant_image(tmp_path / "a.png", BLACK, BLACK, (140, 0, 0), BLACK)
    smile = score(next(t for t in TAGS if t.name == "smile"), 140 / 255)
    assert 0.7 < smile < 0.75
    assert _tags(make(general_threshold=0.7), image) == [("smile",)]
    assert _tags(make(general_threshold=0.75), image) == [()]
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ConfigError) as err:
            TagOptions(general_threshold=bad)
        assert err.value.lines == (f"tagging.general_threshold: must be between 0 and 1 (exclusive), got {bad}",)


def test_ratings_underscores_undesired_and_always_first(make: Callable[..., Tagger], tmp_path: Path) -> None:
    calm = quadrant_image(tmp_path / "calm.png", BLACK, RED, RED, BLACK)
    racy = quadrant_image(tmp_path / "racy.png", BLACK, RED, RED, RED)
    assert _tags(make(), calm) == [("1boy", "smile", "^_^")]
    assert _tags(make(rating_tags=True), calm, racy) == [
        ("general", "1boy", "smile", "^_^"),
        ("sensitive", "1boy", "smile", "holding_flower", "^_^"),
    ]
    look = quadrant_image(tmp_path / "look.png", WHITE, BLACK, RED, BLACK)
    tagger = make(
        replace_underscores=True,
        undesired_tags=frozenset({"green_shorts", "suspenders"}),
        always_first_tags=("smile", "green_hair"),
        trigger_word="zdm",
    )
    assert _tags(tagger, look) == [
        ("zdm", "smile", "green hair", "green sailor collar", "suspender shorts", "shorts", "^_^", "zundamon")
    ]


def test_layouts_sizes_and_batches_agree(make: Callable[..., Tagger], tmp_path: Path) -> None:
    images = [
        quadrant_image(tmp_path / "a.png", WHITE, WHITE, BLUE, GREEN),
        quadrant_image(tmp_path / "b.jpg", GREEN, BLACK, RED, BLACK, size=300),
        quadrant_image(tmp_path / "c.webp", BLACK, RED, BLACK, BLUE, size=100),
    ]
    Image.open(images[0]).resize((60, 100)).save(tmp_path / "d.png")  # padded, then enlarged
    images.append(tmp_path / "d.png")
    reference = _tags(make(), *images)
    assert reference[1] == ("suspenders", "suspender_shorts", "smile", "^_^", "zundamon")
    variants = {
        "nchw": build_tagger_model(tmp_path / "nchw", layout="NCHW"),
        "small": build_tagger_model(tmp_path / "small", size=64),
        "fixed": build_tagger_model(tmp_path / "fixed", batch=2),
    }
    assert make(variants["nchw"]).layout == "NCHW"
    assert make(variants["small"]).input_size == 64
    fixed = make(variants["fixed"])
    assert fixed.batch_size == 2 and fixed.fixed_batch
    for folder in variants.values():
        assert _tags(make(folder), *images) == reference
    for batch_size in (2, 3, 8):
        assert _tags(make(batch_size=batch_size, decode_threads=3), *images) == reference


def test_unreadable_images_are_reported_in_order(make: Callable[..., Tagger], tmp_path: Path) -> None:
    good = quadrant_image(tmp_path / "a.png", BLACK, RED, BLACK, BLACK)
    (tmp_path / "b.png").write_bytes(b"not a png")
    results = list(make(batch_size=2).tag([good, tmp_path / "b.png", good]))
    assert [r.path.name for r in results] == ["b.png", "a.png", "a.png"]
    assert results[0].tags == () and results[0].error is not None
    assert results[0].error.startswith(f"{tmp_path / 'b.png'}: cannot read this image")
    assert results[1].tags == results[2].tags == ("1boy",)


def test_model_and_tag_list_must_match(tmp_path: Path, make: Callable[..., Tagger]) -> None:
    folder = build_tagger_model(tmp_path / "m")
    write_tags_csv(folder / "selected_tags.csv", TAGS[:-1])
    with pytest.raises(DatasetError, match=f"model.onnx has {len(TAGS)} outputs but selected_tags.csv lists"):
        make(folder)
    (folder / "model.onnx").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="onnxruntime cannot load"):
        make(folder)


def test_cuda_is_used_when_onnxruntime_offers_it(make: Callable[..., Tagger], monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[list[str]] = []
    real_session = ort.InferenceSession

    def session(path: str, options: Any, providers: list[str]) -> Any:
        asked.append(providers)
        return real_session(path, options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", session)
    make()
    assert asked == [["CUDAExecutionProvider", "CPUExecutionProvider"]]


def test_decoder_is_pure() -> None:
    labels = Labels(("general", "sensitive", "questionable", "explicit", "a_b", "c", "x_(y)"), (9, 9, 9, 9, 0, 0, 4))
    decoder = TagDecoder(labels, TagOptions(rating_tags=True, always_first_tags=("c", "a_b")))
    scores = np.array([0.2, 0.7, 0.1, 0.0, 0.5, 0.35, 0.86], np.float32)
    assert decoder.decode(scores) == ["c", "a_b", "sensitive", "x_(y)"]


def test_int8_copy_is_cached_next_to_the_model_or_in_the_cache(
    tmp_path: Path, make: Callable[..., Tagger], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = build_tagger_model(tmp_path / "m")
    made = quantized_model(folder / "model.onnx")
    assert made == folder / INT8_FILE
    stamp = made.stat().st_mtime_ns
    assert quantized_model(folder / "model.onnx").stat().st_mtime_ns == stamp  # reused
    image = quadrant_image(tmp_path / "a.png", WHITE, WHITE, BLUE, GREEN)
    assert _tags(make(folder, int8=True), image) == _tags(make(folder), image)
    monkeypatch.setattr(tagger_module, "_writable", lambda folder: False)
    cached = quantized_model(folder / "model.onnx", cache=tmp_path / "cache")
    assert cached.name == INT8_FILE and cached.is_relative_to(tmp_path / "cache" / "int8")


def test_tag_folder_keeps_existing_captions(tmp_path: Path, make: Callable[..., Tagger]) -> None:
    quadrant_image(tmp_path / "a.png", BLACK, RED, BLACK, BLACK)
    quadrant_image(tmp_path / "b.png", BLACK, RED, RED, BLACK)
    (tmp_path / "b.txt").write_text("hand, written\n")
    (tmp_path / "c.png").write_bytes(b"broken")
    seen: list[tuple[int, int]] = []
    result = tag_folder(tmp_path, make, progress=lambda folder, done, total: seen.append((done, total)))
    assert (result.tagged, result.kept, len(result.failed)) == (1, 1, 1)
    assert (tmp_path / "a.txt").read_text() == "1boy\n"
    assert (tmp_path / "b.txt").read_text() == "hand, written\n"
    assert seen == [(0, 2), (1, 2), (2, 2)]
    (tmp_path / "c.png").unlink()

    def no_model() -> Tagger:
        raise AssertionError("nothing to tag, so the model must not load")

    assert tag_folder(tmp_path, no_model).kept == 2
    again = tag_folder(tmp_path, make, overwrite=True)
    assert again.tagged == 2 and again.backup is not None and again.backup.parent == tmp_path / BACKUP_DIR
    assert (tmp_path / "b.txt").read_text() == "1boy, smile, ^_^\n"
    assert (again.backup / "b.txt").read_text() == "hand, written\n"


@pytest.mark.sd_scripts
def test_same_tags_as_sd_scripts(sd_scripts_dir: Path, tmp_path: Path) -> None:
    """sd-scripts' own tagger script and ours give identical captions for the same model and images."""
    models = tmp_path / "models"
    build_tagger_model(models / "local_tiny-tagger")
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    for folder in (theirs, ours):
        folder.mkdir()
        quadrant_image(folder / "a.png", WHITE, WHITE, BLUE, GREEN)
        quadrant_image(folder / "b.jpg", BLACK, RED, (140, 0, 0), BLACK, size=300)
        quadrant_image(folder / "c.webp", BLUE, WHITE, BLACK, RED, size=700)
        Image.open(folder / "a.png").resize((50, 90)).save(folder / "d.png")
        Image.new("RGBA", (500, 320), (0, 200, 0, 128)).save(folder / "e.png")
    # Character tags stay below the threshold: above it, sd-scripts' script crashes (UnboundLocalError).
    done = subprocess.run(
        [
            sys.executable,
            "finetune/tag_images_by_wd14_tagger.py",
            "--onnx",
            "--model_dir",
            str(models),
            "--repo_id",
            "local/tiny-tagger",
            "--general_threshold",
            "0.35",
            "--character_threshold",
            "0.95",
            "--remove_underscore",
            "--undesired_tags",
            "shirt",
            str(theirs),
        ],
        cwd=sd_scripts_dir,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    options = TagOptions(character_threshold=0.95, replace_underscores=True, undesired_tags=frozenset({"shirt"}))
    results = Tagger(resolve_model(str(models / "local_tiny-tagger")), options).tag(sorted(ours.glob("*.*")))
    expected = {r.path.stem: ", ".join(r.tags) + "\n" for r in results}
    assert {p.stem: p.read_text() for p in theirs.glob("*.txt")} == expected
    assert "zundamon" not in "".join(expected.values()) and "green hair" in expected["a"]
