"""Sweep grids: parsing and typing of --grid, the [sweep] table, expansion, name suffixes, records, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from kohya_wrap.errors import ConfigError, RunError
from kohya_wrap.queue.sweep import (
    Axes,
    SweepRecord,
    SweepRun,
    check_axes,
    check_values,
    combination_text,
    expand,
    grid_from_table,
    merge_axes,
    name_suffix,
    parse_grid,
    set_values,
    split_values,
    sweep_runs,
    unique_suffixes,
    write_record,
)


def lines(exc: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return list(exc.value.lines)


def test_values_are_typed_like_set_values() -> None:
    axes = parse_grid(
        [
            "optimizer.type=AdamW8bit,Lion",
            "network.dim=16,32",
            "optimizer.learning_rate=1e-4,5e-5",
            "training.gradient_checkpointing=true,false",
            'sampling.sampler="euler_a","ddim"',
            "dataset.dirs=[1,2],[3]",
        ]
    )
    assert axes == {
        "optimizer.type": ["AdamW8bit", "Lion"],
        "network.dim": [16, 32],
        "optimizer.learning_rate": [1e-4, 5e-5],
        "training.gradient_checkpointing": [True, False],
        "sampling.sampler": ["euler_a", "ddim"],
        "dataset.dirs": [[1, 2], [3]],
    }
    assert isinstance(axes["network.dim"][0], int)


def test_split_values_keeps_brackets_and_quotes() -> None:
    assert split_values('a, [1,2] ,"x,y",{k=1,j=2}') == ["a", "[1,2]", '"x,y"', "{k=1,j=2}"]


def test_parse_errors_one_line_each() -> None:
    with pytest.raises(ConfigError) as err:
        parse_grid(["network.dim=16", "network.dim=32", "network.alpha=", "optimizer.type", "network.conv_dim=4,,8"])
    assert lines(err) == [
        "--grid network.dim: given twice; put all its values in one --grid network.dim=v1,v2",
        "--grid network.alpha: no values; give at least one, e.g. network.alpha=v1,v2",
        "--grid: 'optimizer.type' must look like section.key=v1,v2, e.g. network.dim=16,32",
        "--grid network.conv_dim: an empty value in '4,,8'; remove the extra comma",
    ]


def test_check_axes_errors() -> None:
    axes: Axes = {
        "optimizer.lr": [1],
        "network.dim": [16, 16],
        "network.alpha": [1, 2],
        "training.seed": [1, 2],
        "sampling.every_n_epochs": [1, 2],
        "model.base.path": ["x"],
        "optimizer.args.weight_decay": [0.1, 0.2],
    }
    with pytest.raises(ConfigError) as err:
        check_axes(axes, ["network.alpha=4"])
    shared = (
        "every run of a sweep shares the seed, sample prompts, sample settings and runs folder so their samples "
        "compare; set it with --set instead"
    )
    assert lines(err) == [
        "--grid optimizer.lr: unknown key",
        "--grid network.dim: the value 16 is given twice",
        "--grid network.alpha: also set by --set; give its values only in --grid",
        f"--grid training.seed: {shared}",
        f"--grid sampling.every_n_epochs: {shared}",
        "--grid model.base.path: unknown key; model.base is a single value, not a table",
    ]


def test_unknown_key_suggests_a_close_one() -> None:
    with pytest.raises(ConfigError) as err:
        check_axes({"network.dims": [1, 2]}, [])
    assert lines(err) == ["--grid network.dims: unknown key; did you mean 'network.dim'?"]


def test_no_grid_is_an_error() -> None:
    with pytest.raises(ConfigError) as err:
        check_axes({}, [])
    assert lines(err) == ["sweep: no grid; give --grid section.key=v1,v2 or a [sweep] grid table in the config"]


def test_value_types_checked_once_per_value() -> None:
    with pytest.raises(ConfigError) as err:
        check_values({"network.dim": [16, "abc", 0], "optimizer.type": ["Lion", "lion"], "optimizer.args.x": [1]})
    assert lines(err) == [
        "--grid network.dim=abc: Input should be a valid integer (got 'abc')",
        "--grid network.dim=0: Input should be greater than or equal to 1 (got 0)",
        "--grid optimizer.type=lion: Input should be 'AdamW', 'AdamW8bit', 'Adafactor', 'Lion', 'DAdaptation', "
        "'DAdaptAdam' or 'Prodigy' (got 'lion')",
    ]


def test_sweep_table() -> None:
    assert grid_from_table({"grid": {"network.dim": [16, 32], "optimizer.type": ["Lion"]}}) == {
        "network.dim": [16, 32],
        "optimizer.type": ["Lion"],
    }
    with pytest.raises(ConfigError) as err:
        grid_from_table({"grid": {"network.dim": 16, "network.alpha": []}, "axes": 1})
    assert lines(err) == [
        "sweep.axes: unknown key; a [sweep] table holds only `grid`",
        "sweep.grid.network.dim: must be a list of values, e.g. [16, 32]",
        "sweep.grid.network.alpha: no values; give at least one",
    ]


def test_options_replace_the_file_axis_of_the_same_key() -> None:
    merged = merge_axes({"network.dim": [4], "optimizer.type": ["Lion"]}, {"network.dim": [8, 16]})
    assert merged == {"optimizer.type": ["Lion"], "network.dim": [8, 16]}


def test_expand_first_axis_slowest() -> None:
    combos = expand({"optimizer.type": ["AdamW", "Lion"], "network.dim": [16, 32]})
    assert combos == [
        {"optimizer.type": "AdamW", "network.dim": 16},
        {"optimizer.type": "AdamW", "network.dim": 32},
        {"optimizer.type": "Lion", "network.dim": 16},
        {"optimizer.type": "Lion", "network.dim": 32},
    ]
    assert combination_text(combos[1]) == "optimizer.type=AdamW, network.dim=32"


def test_set_values_builds_tables() -> None:
    doc = {"network": {"dim": 4}, "save": {}}
    assert set_values(doc, {"network.dim": 8, "optimizer.type": "Lion"}) == {
        "network": {"dim": 8},
        "save": {},
        "optimizer": {"type": "Lion"},
    }
    assert doc == {"network": {"dim": 4}, "save": {}}


def test_suffixes_name_only_what_varies() -> None:
    axes: Axes = {
        "optimizer.type": ["Lion", "AdamW8bit"],
        "network.dim": [32, 16],
        "optimizer.learning_rate": [1e-4, 0.5],
        "training.gradient_checkpointing": [True, False],
        "training.max_token_length": [150, 225],
        "network.alpha": [8],
    }
    values = {
        "optimizer.type": "Lion",
        "network.dim": 32,
        "optimizer.learning_rate": 1e-4,
        "training.gradient_checkpointing": True,
        "training.max_token_length": 225,
        "network.alpha": 8,
    }
    assert name_suffix(values, axes) == "lion-d32-lr1e-4-gc1-mtl225"


def test_suffixes_that_read_the_same_get_numbers() -> None:
    axes: Axes = {"sampling.sampler": ["Euler", "euler"], "network.dim": [4]}
    assert unique_suffixes(expand(axes), axes) == ["euler-1", "euler-2"]


def test_record_round_trip_and_sweep_runs(tmp_path: Path) -> None:
    record = SweepRecord(
        "s1",
        {"network.dim": [16, 32]},
        (SweepRun(tmp_path / "a", {"network.dim": 16}), SweepRun(tmp_path / "b", {"network.dim": 32})),
    )
    path = write_record(tmp_path, record)
    assert path == tmp_path / "sweeps" / "s1.json"
    assert sweep_runs(tmp_path, "s1") == [tmp_path / "a", tmp_path / "b"]
    with pytest.raises(FileExistsError):
        write_record(tmp_path, record)
    with pytest.raises(RunError) as err:
        sweep_runs(tmp_path, "nope")
    assert err.value.lines == (f"sweep: no sweep 'nope' in {tmp_path}; known sweeps: s1",)


@pytest.mark.parametrize("name", ["../x", "sub/s1", "/etc/passwd", ".hidden", ""])
def test_sweep_name_that_is_a_path_is_refused(tmp_path: Path, name: str) -> None:
    runs = tmp_path / "runs"
    record = SweepRecord("s1", {"network.dim": [16]}, (SweepRun(tmp_path / "a", {"network.dim": 16}),))
    path = write_record(runs, record)
    (runs / "x.json").write_bytes(path.read_bytes())  # what runs/sweeps/../x.json would read
    with pytest.raises(ConfigError) as err:
        sweep_runs(runs, name)
    assert lines(err) == [
        f"--sweep: '{name}' is not a usable sweep name; use letters, digits, '.', '_' or '-' (up to 100), "
        "starting with a letter or digit"
    ]
