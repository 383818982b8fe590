"""The layer rules of docs/architecture.md, checked on every module's imports (read with `ast`, nothing imported)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "kohya_wrap"

# Lower layers never import higher ones. The shared leaves (errors, files) are below everything;
# the front-ends (cli, ui, and progress, the terminal's view) are above everything.
LAYERS = {
    "errors": 0,
    "files": 0,
    "procs": 0,
    "config": 1,
    "data": 2,
    "train": 3,
    "interop": 4,  # reads and writes sd-scripts' files with train's argument spec and renderer
    "review": 5,
    "queue": 6,
    "commands": 7,
    "progress": 8,
    "ui": 8,
    "cli": 9,  # `kohya-wrap ui` starts the web app; the web app never calls into the CLI
    "__main__": 10,
}

# Upward imports allowed by name, each with its reason; test_known_exceptions_are_still_needed keeps this
# list from outliving the code it excuses.
KNOWN_UPWARD = {
    # One code path: a queue worker runs its job through the same train command the CLI calls (a lazy import
    # inside the job's function, so the queue's lower parts stay importable without the command layer).
    ("kohya_wrap/queue/worker.py", "kohya_wrap.commands"): "by design",
}

# Third-party packages only one corner of the package may import.
ONLY_IN = {
    "click": ("kohya_wrap/cli/",),
    "rich": ("kohya_wrap/progress.py",),
    "ray": ("kohya_wrap/queue/ray",),
    "starlette": ("kohya_wrap/ui/",),
    "fastapi": ("kohya_wrap/ui/",),
    "uvicorn": ("kohya_wrap/ui/",),
}


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def rel(path: Path) -> str:
    return path.relative_to(PACKAGE.parent).as_posix()


def layer_of(path: Path) -> str:
    """The first part below kohya_wrap/: a stage folder or a top-level module."""
    part = path.relative_to(PACKAGE).parts[0]
    return part.removesuffix(".py")


def imported(path: Path, root: Path = PACKAGE.parent) -> list[str]:
    """Every absolute module name `path` imports, at the top or inside functions (relative imports resolved)."""
    tree = ast.parse(path.read_text("utf-8"), filename=str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names.append(module)
            # `from kohya_wrap import x` imports the module kohya_wrap.x.
            if module == "kohya_wrap":
                names += [f"kohya_wrap.{alias.name}" for alias in node.names]
    return names


def own_layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if parts[0] == "kohya_wrap" and len(parts) > 1 else None


def upward(path: Path) -> list[str]:
    """The modules of higher layers `path` imports, less the known exceptions."""
    here = layer_of(path)
    if here == "__init__":
        return []
    return [
        name
        for name in imported(path)
        if (there := own_layer(name)) is not None
        and there in LAYERS
        and LAYERS[there] > LAYERS[here]
        and (rel(path), name) not in KNOWN_UPWARD
    ]


def test_every_part_of_the_package_has_a_layer() -> None:
    assert sorted({layer_of(p) for p in modules()} - {"__init__"}) == sorted(LAYERS)


@pytest.mark.parametrize("path", modules(), ids=rel)
def test_lower_layers_never_import_higher_ones(path: Path) -> None:
    assert upward(path) == [], f"{rel(path)} ({layer_of(path)}) imports a higher layer"


@pytest.mark.parametrize(("where", "name"), sorted(KNOWN_UPWARD), ids=lambda x: str(x))
def test_known_exceptions_are_still_needed(where: str, name: str) -> None:
    path = PACKAGE.parent / where
    assert path.is_file() and name in imported(path), "remove this entry from KNOWN_UPWARD"


@pytest.mark.parametrize("path", modules(), ids=rel)
def test_framework_imports_stay_in_their_corner(path: Path) -> None:
    where = rel(path)
    misplaced = [
        name
        for name in imported(path)
        if (allowed := ONLY_IN.get(name.split(".")[0])) is not None and not where.startswith(allowed)
    ]
    assert misplaced == [], f"{where} imports a framework that belongs elsewhere"


def test_the_rules_catch_what_they_are_for(tmp_path: Path) -> None:
    # The checks above pass vacuously if `imported` reads nothing; a planted module shows they bite.
    sample = tmp_path / "kohya_wrap" / "train" / "sample.py"
    sample.parent.mkdir(parents=True)
    sample.write_text(
        "import click\nfrom .. import commands\n\ndef f():\n    from kohya_wrap.review import report\n", "utf-8"
    )
    names = imported(sample, tmp_path)
    assert names == ["click", "kohya_wrap", "kohya_wrap.commands", "kohya_wrap.review"]
    assert [own_layer(n) for n in names] == [None, None, "commands", "review"]
    assert [n for n in names if n.split(".")[0] in ONLY_IN] == ["click"]
