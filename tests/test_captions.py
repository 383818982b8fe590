"""Tests for kohya_wrap.data.captions: parsing, safe writes with backups, statistics, edits and auto-prune."""

from __future__ import annotations

from pathlib import Path

import pytest

from kohya_wrap.data.captions import (
    BACKUP_DIR,
    DEFAULT_KEEP,
    CaptionEdit,
    PruneProposal,
    apply_plan,
    backup_captions,
    dedupe,
    find_images,
    format_caption,
    leading_tag,
    load_captions,
    parse_caption,
    parse_replacements,
    plan_edit,
    propose_prune,
    prune_proposal,
    read_caption,
    remove_tags,
    replace_tags,
    tag_key,
    tag_stats,
    with_trigger,
    write_caption,
)
from kohya_wrap.errors import DatasetError


def test_parse_and_format_round_trip() -> None:
    assert parse_caption(" 1boy,green_hair ,, solo\nsmile\n") == ["1boy", "green_hair", "solo", "smile"]
    assert format_caption(["zdm", "1boy", "green hair"]) == "zdm, 1boy, green hair\n"
    assert parse_caption(format_caption(["a", "b c"])) == ["a", "b c"]


def test_tag_key_merges_spellings() -> None:
    assert tag_key("Green_Hair ") == tag_key("green hair") == "green hair"


def test_read_caption_strips_bom(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes("\ufeffzdm, smile\n".encode())
    assert read_caption(path) == ["zdm", "smile"]


def test_write_caption_never_overwrites_without_flag(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    write_caption(path, ["zdm", "smile"])
    with pytest.raises(DatasetError) as err:
        write_caption(path, ["other"])
    assert err.value.lines == (f"{path}: caption already exists; pass --overwrite to replace it (a backup is kept)",)
    assert path.read_text() == "zdm, smile\n"
    write_caption(path, ["other"], overwrite=True)
    assert path.read_text() == "other\n"


def test_write_caption_refuses_empty(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="empty caption"):
        write_caption(tmp_path / "a.txt", [])
    assert not (tmp_path / "a.txt").exists()


def test_with_trigger_puts_it_first_once() -> None:
    assert with_trigger(["1boy", "zdm", "smile"], "zdm") == ["zdm", "1boy", "smile"]
    assert with_trigger(["1boy"], None) == ["1boy"]


def test_remove_and_replace_match_any_spelling() -> None:
    tags = ["zdm", "green hair", "suspenders", "smile"]
    assert remove_tags(tags, ["green_hair", "Suspenders"]) == ["zdm", "smile"]
    assert replace_tags(tags, {"green_hair": "aqua_hair", "smile": "zdm"}) == [
        "zdm",
        "aqua_hair",
        "suspenders",
    ]
    assert dedupe(["a", "b", "a_x", "a x"]) == ["a", "b", "a_x"]


def test_caption_edit_order_and_trigger_survives_removal() -> None:
    edit = CaptionEdit(remove=frozenset({"zdm", "shirt"}), replace={"shorts": "green_shorts"}, trigger="zdm")
    assert edit.apply(["1boy", "shirt", "shorts", "green_shorts"]) == ["zdm", "1boy", "green_shorts"]


def test_tag_stats_counts_images_not_occurrences() -> None:
    stats = tag_stats([["a", "b", "a"], ["a"], ["c", "b"], ["a"]])
    assert stats.images == 4
    assert [(c.tag, c.images, c.share) for c in stats.tags] == [("a", 3, 0.75), ("b", 2, 0.5), ("c", 1, 0.25)]


def test_propose_prune_keeps_generic_tags_and_trigger() -> None:
    captions = [["zdm", "1boy", "solo", "green_hair", "suspenders", "standing"]] * 5 + [
        ["zdm", "1boy", "solo", "green_hair", "sitting"]
    ]
    stats = tag_stats(captions)
    # suspenders: 5/6 ≥ 0.6; standing 5/6 but generic; sitting 1/6.
    assert propose_prune(stats, trigger="zdm") == ("green_hair", "suspenders")
    assert propose_prune(stats, min_share=0.9, trigger="zdm") == ("green_hair",)
    assert propose_prune(stats, keep=DEFAULT_KEEP | {"suspenders"}, trigger="zdm") == ("green_hair",)
    assert "zdm" in propose_prune(stats, keep=frozenset())


def test_propose_prune_needs_a_few_images_and_a_valid_share() -> None:
    assert propose_prune(tag_stats([["green_hair"], ["green_hair"]])) == ()
    with pytest.raises(DatasetError, match="auto_prune_min_share"):
        propose_prune(tag_stats([["a"]] * 3), min_share=1.5)


def test_parse_replacements() -> None:
    assert parse_replacements(["a=b, c = d", "e=f"]) == {"a": "b", "c": "d", "e": "f"}
    with pytest.raises(DatasetError) as err:
        parse_replacements(["a-b"])
    assert err.value.lines == ("--replace: 'a-b' must look like old_tag=new_tag",)


def _folder(tmp_path: Path, captions: dict[str, str]) -> Path:
    for stem, text in captions.items():
        (tmp_path / f"{stem}.png").write_bytes(b"png")
        if text:
            (tmp_path / f"{stem}.txt").write_text(text)
    return tmp_path


def test_plan_and_apply_back_up_only_what_changes(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"a": "1boy, green_hair\n", "b": "1boy, smile\n", "c": "green_hair\n", "d": ""})
    captions = load_captions(find_images(folder))
    assert set(captions) == {folder / "a.txt", folder / "b.txt", folder / "c.txt"}
    plan = plan_edit(captions, CaptionEdit(remove=frozenset({"green_hair"})))
    assert plan.changes == {folder / "a.txt": ["1boy"]}
    assert plan.emptied == (folder / "c.txt",)
    assert plan.unchanged == 1
    backup = apply_plan(folder, plan)
    assert backup is not None and backup.parent == folder / BACKUP_DIR
    assert (folder / "a.txt").read_text() == "1boy\n"
    assert (backup / "a.txt").read_text() == "1boy, green_hair\n"
    assert sorted(p.name for p in backup.iterdir()) == ["a.txt"]
    assert (folder / "c.txt").read_text() == "green_hair\n"


def test_backups_never_collide(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x\n")
    first = backup_captions(tmp_path, [tmp_path / "a.txt"])
    second = backup_captions(tmp_path, [tmp_path / "a.txt"])
    assert first is not None and second is not None and first != second
    assert backup_captions(tmp_path, [tmp_path / "missing.txt"]) is None


def test_find_images_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        find_images(tmp_path / "nope")
    assert err.value.lines == (f"{tmp_path / 'nope'}: folder not found",)
    with pytest.raises(DatasetError) as err:
        find_images(tmp_path)
    assert err.value.lines == (f"{tmp_path}: no images (PNG, JPEG, WebP or BMP) in this folder",)


def test_read_caption_takes_the_first_line_as_sd_scripts_does(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("zdm, smile\nsecond, line\n", encoding="utf-8")
    assert read_caption(path) == ["zdm", "smile"]
    path.write_bytes("zdm, caf\xe9".encode("latin-1"))
    with pytest.raises(DatasetError) as err:
        read_caption(path)
    assert err.value.lines == (
        f"{path}: not UTF-8 text (sd-scripts reads captions as UTF-8 only and stops on it); save it as UTF-8",
    )


def test_leading_tag_is_the_trigger_word_captions_carry() -> None:
    assert leading_tag([["zdm", "smile"], ["Zdm", "sitting"]]) == "zdm"
    assert leading_tag([["zdm", "smile"]]) is None  # one caption cannot tell
    assert leading_tag([["zdm"], ["other"]]) is None
    assert leading_tag([["1girl", "smile"], ["1girl", "solo"]]) is None  # a generic tag, not a trigger


def test_a_new_trigger_word_replaces_the_previous_one() -> None:
    edit = CaptionEdit(trigger="other", previous_trigger="zdm")
    assert edit.apply(["zdm", "smile"]) == ["other", "smile"]
    assert CaptionEdit(trigger="zdm", previous_trigger="zdm").apply(["zdm", "smile"]) == ["zdm", "smile"]
    assert CaptionEdit(previous_trigger="zdm").apply(["zdm", "smile"]) == ["zdm", "smile"]


def test_prune_proposal_keeps_the_leading_tag_and_says_so() -> None:
    stats = tag_stats([["zdm", "green_hair", "smile"], ["zdm", "green_hair"], ["zdm", "green_hair", "sitting"]])
    assert prune_proposal(stats, 0.6, DEFAULT_KEEP, None, "zdm") == PruneProposal(("green_hair",), "zdm")
    assert prune_proposal(stats, 0.6, DEFAULT_KEEP, "zdm", "zdm") == PruneProposal(("green_hair",), None)
