"""Tests for `kohya-wrap tag`, `tags` and `prepare`: SeaArt's dataset steps, end to end, through the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from filetree import snapshot
from PIL import Image
from tagger_model import build_tagger_model, quadrant_image

from kohya_wrap.cli import main
from kohya_wrap.data.captions import BACKUP_DIR

WHITE, BLACK, RED, GREEN, BLUE = (255, 255, 255), (0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255)
# SeaArt's walkthrough: 7 images of one character (here Zundamon: the top half of each image), in a
# kohya-style folder. Her look is in every image, her shirt only where the top-right quadrant is white;
# pose and background (the bottom half) vary.
WALKTHROUGH = {
    "01.png": (WHITE, WHITE, BLUE, GREEN),
    "02.png": (WHITE, WHITE, BLUE, BLUE),
    "03.png": (WHITE, RED, GREEN, GREEN),
    "04.png": (WHITE, WHITE, RED, BLUE),
    "05.png": (WHITE, RED, BLUE, RED),
    "06.png": (WHITE, WHITE, GREEN, GREEN),
    "07.bmp": (WHITE, WHITE, BLUE, (255, 255, 0)),
}
CHARACTER_TAGS = [
    "green_hair",
    "green_sailor_collar",
    "green_shorts",
    "shorts",
    "suspender_shorts",
    "suspenders",
    "zundamon",
    "green_footwear",
    "shirt",
    "short_sleeves",
]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tagger_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def walkthrough(tmp_path: Path) -> Path:
    folder = tmp_path / "20_zdm 1boy"
    folder.mkdir()
    for name, quadrants in WALKTHROUGH.items():
        quadrant_image(folder / name, *quadrants, size=96)
    return folder


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def captions(folder: Path) -> dict[str, str]:
    return {p.stem: p.read_text() for p in sorted(folder.glob("*.txt"))}


def test_walkthrough_from_raw_images_to_pruned_captions(walkthrough: Path, model: Path) -> None:
    tagged = run("tag", walkthrough, "--model", model, "--trigger", "zdm")
    assert tagged.exit_code == 0, tagged.output
    assert f"{walkthrough}: 7 captions written, 0 images kept their caption" in tagged.stdout
    assert tagged.stderr.startswith("20_zdm 1boy: tagging 7 images\n20_zdm 1boy: tagged 1/7 (")
    raw = captions(walkthrough)
    assert raw["01"] == (
        "zdm, green_hair, green_sailor_collar, suspenders, suspender_shorts, green_shorts, shorts, "
        "short_sleeves, shirt, green_footwear, 1boy, standing, simple_background, zundamon\n"
    )
    assert all(text.startswith("zdm, ") for text in raw.values())

    dry = run("tags", walkthrough, "--auto-prune", "--trigger", "zdm")
    assert dry.exit_code == 0, dry.output
    lines = dry.stdout.splitlines()
    assert lines[:4] == [
        "7 captioned images in " + str(walkthrough),
        "images  share  tag",
        "     7   100%  1boy",
        "     7   100%  green_hair",
    ]
    assert "     5    71%  shirt" in lines and "     4    57%  simple_background" in lines
    assert (
        f"auto-prune: 10 tags in at least 60% of the images and not in the keep-list: {', '.join(CHARACTER_TAGS)}"
    ) in lines
    assert lines[-1] == (
        f"dry run: 7 of 7 captions would change; add --apply to write them (the originals are "
        f"backed up in {walkthrough}/.kohya_wrap-backup/)"
    )
    assert captions(walkthrough) == raw

    applied = run("tags", walkthrough, "--auto-prune", "--trigger", "zdm", "--apply")
    assert applied.exit_code == 0, applied.output
    pruned = captions(walkthrough)
    assert pruned == {
        "01": "zdm, 1boy, standing, simple_background\n",
        "02": "zdm, 1boy, standing, outdoors\n",
        "03": "zdm, 1boy, sitting, simple_background\n",
        "04": "zdm, 1boy, smile, outdoors, ^_^\n",
        "05": "zdm, 1boy, standing, holding_flower\n",
        "06": "zdm, 1boy, sitting, simple_background\n",
        "07": "zdm, 1boy, standing, simple_background, holding_flower\n",
    }
    (backup,) = (walkthrough / BACKUP_DIR).iterdir()
    assert captions(backup) == raw
    assert applied.stdout.splitlines()[-1] == f"changed 7 captions; originals backed up in {backup}"


def prepare_config(tmp_path: Path, walkthrough: Path, model: Path, dataset: str = "", tagging: str = "") -> Path:
    """A config for `prepare` on the walkthrough folder: trigger word zdm, auto-prune on, plus extra lines."""
    config = tmp_path / "zdm.toml"
    config.write_text(f"""
[model]
family = "sd15"
base = "model.safetensors"

[dataset]
dirs = [{{ path = "{walkthrough.name}" }}]
{dataset}

[tagging]
model = "{model}"
trigger_word = "zdm"
auto_prune = true
{tagging}
""")
    return config


def test_prepare_runs_the_config_steps(walkthrough: Path, model: Path, tmp_path: Path) -> None:
    config = prepare_config(
        tmp_path,
        walkthrough,
        model,
        dataset='crop = "focus"\ncrop_size = 64',
        tagging='remove_tags = ["holding_flower"]\nreplace_tags = { simple_background = "white_background" }',
    )
    before = sorted(p.name for p in walkthrough.iterdir())
    done = run("prepare", config)
    assert done.exit_code == 0, done.output
    prepared = tmp_path / "prepared" / walkthrough.name
    assert sorted(p.name for p in walkthrough.iterdir()) == before  # originals untouched, no captions added
    assert {Image.open(p).size for p in prepared.glob("*.png")} == {(64, 64)}
    assert captions(prepared)["01"] == "zdm, 1boy, standing, white_background\n"
    assert captions(prepared)["07"] == "zdm, 1boy, standing, white_background\n"
    out = done.stdout.splitlines()
    assert f"auto-prune: {', '.join(CHARACTER_TAGS)} removed from 7 captions" in out
    (first, second) = sorted((prepared / BACKUP_DIR).iterdir())  # the edits', then auto-prune's
    assert f"auto-prune: originals backed up in {second}" in out
    assert captions(second)["01"].startswith("zdm, green_hair, ")
    assert out[-1] == (
        f"dataset.dirs.0.path: the prepared images are in {prepared}; point the config at that folder to train on them"
    )
    again = run("prepare", config)
    assert again.exit_code == 2
    assert again.stderr == (
        f"{prepared}: already exists; prepared images go into a new folder, so choose another one or delete it\n"
    )


def test_tag_with_crop_into_a_new_folder(walkthrough: Path, model: Path, tmp_path: Path) -> None:
    out = tmp_path / "square"
    done = run("tag", walkthrough, "--model", model, "--crop", "center", "--crop-size", "64", "--out", out)
    assert done.exit_code == 0, done.output
    assert len(list(out.glob("*.png"))) == 7 and len(captions(out)) == 7
    assert not list(walkthrough.glob("*.txt"))


def test_existing_captions_are_kept_and_get_the_trigger(tmp_path: Path, model: Path) -> None:
    quadrant_image(tmp_path / "a.png", BLACK, RED, BLACK, BLACK)
    quadrant_image(tmp_path / "b.png", BLACK, RED, BLACK, BLACK)
    (tmp_path / "b.txt").write_text("1boy, hand written\n")
    done = run("tag", tmp_path, "--model", model, "--trigger", "zdm")
    assert done.exit_code == 0, done.output
    assert captions(tmp_path) == {"a": "zdm, 1boy\n", "b": "zdm, 1boy, hand written\n"}
    assert "put 'zdm' first in 1 existing caption (originals backed up in" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tag", "{empty}"], "{empty}: no images (PNG, JPEG, WebP or BMP) in this folder"),
        (
            ["tag", "{images}", "--model", "{missing}"],
            "tagging.model: '{missing}' is neither a folder with model.onnx and selected_tags.csv nor a hub "
            "id like SmilingWolf/wd-vit-tagger-v3",
        ),
        (
            ["tag", "{images}", "--model", "{model}", "--general-threshold", "1.5"],
            "tagging.general_threshold: must be between 0 and 1 (exclusive), got 1.5",
        ),
        (
            ["tag", "{images}", "--crop", "focus", "--crop-size", "512"],
            "--crop focus: cropped copies go into a new folder; give --out DIR",
        ),
        (
            ["tag", "{images}", "--crop-size", "512"],
            "--crop-size: only used with --crop center or --crop focus",
        ),
        (["tags", "{images}"], "{images}: no .txt captions; run `kohya-wrap tag {images}` first"),
        (
            ["tags", "{images}", "--replace", "a"],
            "--replace: 'a' must look like old_tag=new_tag",
        ),
        (["prepare", "{missing}"], "config: file not found: {missing}"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, model: Path, args: list[str], message: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "images").mkdir()
    quadrant_image(tmp_path / "images" / "a.png", BLACK, RED, BLACK, BLACK)
    names = {
        "empty": tmp_path / "empty",
        "images": tmp_path / "images",
        "missing": tmp_path / "nope",
        "model": model,
    }
    done = run(*[a.format(**names) for a in args])
    assert done.exit_code == 2
    assert done.stderr == message.format(**names) + "\n"


def test_unreadable_images_are_named_after_the_others_are_tagged(tmp_path: Path, model: Path) -> None:
    quadrant_image(tmp_path / "a.png", BLACK, RED, BLACK, BLACK)
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8\xff truncated")
    done = run("tag", tmp_path, "--model", model)
    assert done.exit_code == 2
    assert captions(tmp_path) == {"a": "1boy\n"}
    assert done.stderr.splitlines()[-1].startswith(f"{tmp_path / 'b.jpg'}: cannot read this image (")


def test_tags_remove_and_replace(tmp_path: Path) -> None:
    for stem, text in {
        "a": "zdm, green_hair, smile\n",
        "b": "zdm, green_hair\n",
        "c": "zdm, smile\n",
    }.items():
        quadrant_image(tmp_path / f"{stem}.png", BLACK, BLACK, BLACK, BLACK, size=8)
        (tmp_path / f"{stem}.txt").write_text(text)
    done = run("tags", tmp_path, "--remove", "green hair", "--replace", "smile=grin", "--apply")
    assert done.exit_code == 0, done.output
    assert "remove green hair: 2 captions" in done.stdout and "replace smile → grin: 2 captions" in done.stdout
    assert captions(tmp_path) == {"a": "zdm, grin\n", "b": "zdm\n", "c": "zdm, grin\n"}


def test_help_imports_no_heavy_modules() -> None:
    code = (
        "import sys\nfrom click.testing import CliRunner\nfrom kohya_wrap.cli import main\n"
        "for args in (['--help'], ['tag', '--help'], ['tags', '--help'], ['prepare', '--help']):\n"
        "    assert CliRunner().invoke(main, args).exit_code == 0\n"
        "print(sorted({'onnxruntime', 'PIL', 'numpy'} & set(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout == "[]\n"


def test_prepare_honours_keep_tags_and_underscores(walkthrough: Path, model: Path, tmp_path: Path) -> None:
    config = prepare_config(
        tmp_path,
        walkthrough,
        model,
        tagging='keep_tags = ["green hair"]\nreplace_underscores = true\nalways_first_tags = ["standing"]',
    )
    done = run("prepare", config)
    assert done.exit_code == 0, done.output
    written = {name: caption.strip() for name, caption in captions(walkthrough).items()}
    # The kept trait stays; the other character tags go; "standing" follows the trigger word.
    assert all("green hair" in caption.split(", ") for caption in written.values())
    assert not any("suspenders" in caption.split(", ") for caption in written.values())
    assert written["01"].split(", ")[:2] == ["zdm", "standing"]
    assert "simple background" in written["06"].split(", ")


# ---- refused input writes nothing ----------------------------------------------------------------


def captioned(folder: Path, texts: dict[str, str | bytes]) -> Path:
    """Images named after `texts`' keys, each with that .txt caption (bytes written as they are)."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem, text in texts.items():
        quadrant_image(folder / f"{stem}.png", BLACK, RED, BLACK, BLACK, size=8)
        caption = folder / f"{stem}.txt"
        caption.write_bytes(text if isinstance(text, bytes) else text.encode())
    return folder


def refused(root: Path, *args: str | Path) -> str:
    """Run a command that must exit 2 without changing anything under `root`; its stderr."""
    before = snapshot(root)
    done = run(*args)
    assert done.exit_code == 2, done.output
    assert done.stdout == ""
    assert snapshot(root) == before
    return done.stderr


@pytest.mark.parametrize("trigger", ["zdm, 1girl", "  ", "zdm\nother"])
def test_a_trigger_word_with_commas_or_blank_is_refused(tmp_path: Path, model: Path, trigger: str) -> None:
    folder = captioned(tmp_path / "images", {"a": "zdm, 1boy\n", "b": "zdm, smile\n"})
    message = f"--trigger: must be a non-empty word without commas or newlines, got {trigger!r}\n"
    assert refused(tmp_path, "tags", folder, "--trigger", trigger, "--apply") == message
    assert refused(tmp_path, "tag", folder, "--model", model, "--trigger", trigger) == message


def test_prepare_checks_every_folder_before_changing_any(walkthrough: Path, model: Path, tmp_path: Path) -> None:
    for image in walkthrough.glob("0[1-3].png"):
        image.with_suffix(".txt").write_text("1boy, smile\n")
    config = prepare_config(tmp_path, walkthrough, model)
    text = config.read_text().replace(
        f'{{ path = "{walkthrough.name}" }}', f'{{ path = "{walkthrough.name}" }}, {{ path = "typo" }}'
    )
    config.write_text(text)
    assert refused(tmp_path, "prepare", config) == f"{tmp_path / 'typo'}: folder not found\n"


def test_prepare_refuses_a_missing_tagger_even_with_every_caption_there(walkthrough: Path, tmp_path: Path) -> None:
    for image in walkthrough.iterdir():
        image.with_suffix(".txt").write_text("1boy, smile\n")
    config = prepare_config(tmp_path, walkthrough, tmp_path / "no-model")
    assert refused(tmp_path, "prepare", config) == (
        f"tagging.model: '{tmp_path / 'no-model'}' is neither a folder with model.onnx and selected_tags.csv nor a "
        "hub id like SmilingWolf/wd-vit-tagger-v3\n"
    )


def test_tag_refuses_a_missing_model_when_every_image_has_a_caption(tmp_path: Path) -> None:
    folder = captioned(tmp_path / "images", {"a": "zdm, 1boy\n"})
    missing = tmp_path / "nope"
    assert refused(tmp_path, "tag", folder, "--model", missing) == (
        f"tagging.model: '{missing}' is neither a folder with model.onnx and selected_tags.csv nor a hub id like "
        "SmilingWolf/wd-vit-tagger-v3\n"
    )


def test_a_model_that_cannot_load_leaves_no_crops_behind(walkthrough: Path, model: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "model.onnx").write_bytes(b"not a model")
    (broken / "selected_tags.csv").write_bytes((model / "selected_tags.csv").read_bytes())
    out = tmp_path / "sq"
    message = refused(
        tmp_path, "tag", walkthrough, "--model", broken, "--crop", "center", "--crop-size", "64", "--out", out
    )
    assert message.startswith(f"tagging.model: onnxruntime cannot load {broken / 'model.onnx'}: ")
    assert not out.exists()
    retry = run("tag", walkthrough, "--model", model, "--crop", "center", "--crop-size", "64", "--out", out)
    assert retry.exit_code == 0, retry.output


def test_an_output_folder_under_a_file_is_one_line(walkthrough: Path, model: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "sq"
    assert refused(tmp_path, "tag", walkthrough, "--model", model, "--out", out) == (
        f"{tmp_path / 'file'} is a file, so {out} cannot be created inside it; choose another folder for the "
        "prepared images\n"
    )


def test_an_empty_caption_extension_is_one_line(tmp_path: Path, model: Path) -> None:
    folder = captioned(tmp_path / "images", {"a": "zdm, 1boy\n"})
    message = "--caption-extension: must be a file extension like .txt, got ''\n"
    assert refused(tmp_path, "tags", folder, "--caption-extension", "") == message
    assert refused(tmp_path, "tag", folder, "--model", model, "--caption-extension", "") == message


def test_a_caption_that_is_not_utf8_is_named(tmp_path: Path, model: Path) -> None:
    folder = captioned(tmp_path / "images", {"a": "zdm, 1boy\n", "b": "zdm, caf\xe9\n".encode("latin-1")})
    message = (
        f"{folder / 'b.txt'}: not UTF-8 text (sd-scripts reads captions as UTF-8 only and stops on it); "
        "save it as UTF-8\n"
    )
    assert refused(tmp_path, "tags", folder, "--remove", "1boy", "--apply") == message
    assert refused(tmp_path, "tag", folder, "--model", model, "--trigger", "other") == message


def test_a_broken_image_link_is_refused(tmp_path: Path, model: Path) -> None:
    folder = captioned(tmp_path / "images", {"a": "zdm, 1boy\n"})
    (folder / "b.png").symlink_to(tmp_path / "gone.png")
    message = (
        f"{folder}: links to missing images (sd-scripts would list them and then stop): b.png; fix or remove them\n"
    )
    assert refused(tmp_path, "tags", folder, "--trigger", "zdm", "--apply") == message
    assert refused(tmp_path, "tag", folder, "--model", model) == message


# ---- the trigger word: never pruned, replaced rather than stacked ---------------------------------


def test_auto_prune_keeps_the_tag_that_leads_every_caption(walkthrough: Path, model: Path) -> None:
    assert run("tag", walkthrough, "--model", model, "--trigger", "zdm").exit_code == 0
    raw = captions(walkthrough)
    dry = run("tags", walkthrough, "--auto-prune")
    assert dry.exit_code == 0, dry.output
    lines = dry.stdout.splitlines()
    assert (
        f"auto-prune: 10 tags in at least 60% of the images and not in the keep-list: {', '.join(CHARACTER_TAGS)}"
        in lines
    )
    assert (
        "auto-prune: keeps 'zdm', the first tag of every caption (the trigger word); remove it with --remove 'zdm'"
    ) in lines
    applied = run("tags", walkthrough, "--auto-prune", "--apply")
    assert applied.exit_code == 0, applied.output
    assert all(text.startswith("zdm, 1boy, ") for text in captions(walkthrough).values())
    assert captions(walkthrough) != raw


def test_a_new_trigger_word_replaces_the_old_one(walkthrough: Path, model: Path) -> None:
    assert run("tag", walkthrough, "--model", model, "--trigger", "zdm").exit_code == 0
    dry = run("tags", walkthrough, "--trigger", "other")
    assert dry.exit_code == 0, dry.output
    assert "trigger word zdm → other: 7 captions ('zdm' led every caption)" in dry.stdout.splitlines()
    applied = run("tags", walkthrough, "--trigger", "other", "--apply")
    assert applied.exit_code == 0, applied.output
    texts = captions(walkthrough).values()
    assert all(text.startswith("other, green_hair, ") and "zdm" not in text for text in texts)

    again = run("tag", walkthrough, "--model", model, "--trigger", "third")
    assert again.exit_code == 0, again.output
    assert f"{walkthrough}: 'third' replaced the earlier trigger word 'other' (the tag that led every caption)" in (
        again.stdout.splitlines()
    )
    assert all(t.startswith("third, green_hair, ") and "other" not in t for t in captions(walkthrough).values())


def test_a_generic_first_tag_is_not_taken_for_a_trigger(tmp_path: Path) -> None:
    folder = captioned(tmp_path / "images", {"a": "1boy, smile\n", "b": "1boy, sitting\n"})
    done = run("tags", folder, "--trigger", "zdm", "--apply")
    assert done.exit_code == 0, done.output
    assert captions(folder) == {"a": "zdm, 1boy, smile\n", "b": "zdm, 1boy, sitting\n"}


# ---- captions are read as sd-scripts reads them: the first line only -----------------------------


def test_only_the_first_line_of_a_caption_counts(tmp_path: Path) -> None:
    folder = captioned(tmp_path / "images", {"a": "zdm, smile\nextra, lines\n", "b": "zdm, sitting\n"})
    done = run("tags", folder)
    assert done.exit_code == 0, done.output
    assert done.stderr == (
        "warning: 1 caption has several lines; sd-scripts reads only the first, so only it is counted and edited: "
        "a.txt\n"
    )
    assert done.stdout.splitlines()[2:] == ["     2   100%  zdm", "     1    50%  sitting", "     1    50%  smile"]


def test_option_limits_come_from_the_settings(tmp_path: Path, model: Path) -> None:
    folder = captioned(tmp_path / "images", {"a": "zdm, 1boy\n", "b": "zdm, smile\n"})
    assert refused(tmp_path, "tags", folder, "--auto-prune", "--min-share", "1.5", "--apply") == (
        "--min-share: must be above 0 and at most 1, got 1.5\n"
    )
    assert refused(
        tmp_path, "tag", folder, "--model", model, "--crop", "center", "--crop-size", "32", "--out", "sq"
    ) == ("--crop-size: must be between 64 and 8192, got 32\n")
    # Checked even when every image has its caption, so nothing needs the tagger.
    assert refused(tmp_path, "tag", folder, "--model", model, "--batch-size", "0") == (
        "--batch-size: must be 1 or more, got 0\n"
    )


def test_prepare_reads_every_caption_before_changing_any(walkthrough: Path, model: Path, tmp_path: Path) -> None:
    for image in walkthrough.iterdir():
        image.with_suffix(".txt").write_text("1boy, smile\n")
    second = captioned(tmp_path / "second", {"a": "1boy, smile\n", "b": "caf\xe9\n".encode("latin-1")})
    config = prepare_config(tmp_path, walkthrough, model)
    config.write_text(
        config.read_text().replace(
            f'path = "{walkthrough.name}" }}', f'path = "{walkthrough.name}" }}, {{ path = "second" }}'
        )
    )
    assert refused(tmp_path, "prepare", config) == (
        f"{second / 'b.txt'}: not UTF-8 text (sd-scripts reads captions as UTF-8 only and stops on it); "
        "save it as UTF-8\n"
    )
