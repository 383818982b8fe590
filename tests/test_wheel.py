"""A non-editable install (the wheel) has the presets: `presets` and `init` work from a fresh environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run(*argv: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KOHYA_WRAP_TEMPLATES", "PYTHONPATH")}
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the sources, installed into a new venv that reuses our dependencies."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    # A copy, so that building never writes build/ or *.egg-info into the working tree.
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "kohya_wrap", src / "kohya_wrap", ignore=shutil.ignore_patterns("__pycache__"))
    built = run(
        sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", src, "-w", root / "dist",
        cwd=root,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (root / "dist").glob("kohya_wrap-*.whl")
    venv = root / "venv"
    made = run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=root)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=root).stdout.strip()
    # Our dependencies (pydantic, click, …) come from this interpreter's site-packages; its own
    # kohya_wrap install is an editable hook that a .pth-added folder never runs.
    Path(purelib, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", "utf-8")
    done = run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel, cwd=root)
    assert done.returncode == 0, done.stderr
    return wheel


def test_the_wheel_holds_every_preset(installed: Path) -> None:
    names = zipfile.ZipFile(installed).namelist()
    packaged = sorted(Path(n).name for n in names if n.startswith("kohya_wrap/templates/"))
    assert packaged == sorted(p.name for p in (REPO / "kohya_wrap" / "templates").glob("*.toml"))


def test_presets_and_init_from_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    bin_dir = installed.parent.parent / "venv" / "bin"
    where = run(bin_dir / "python", "-c", "import kohya_wrap; print(kohya_wrap.__file__)", cwd=tmp_path)
    assert where.stdout.strip().startswith(str(installed.parent.parent / "venv")), where.stdout
    listed = run(bin_dir / "kohya-wrap", "presets", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    names = [line.split()[0] for line in listed.stdout.splitlines()]
    assert names == sorted(p.stem for p in (REPO / "kohya_wrap" / "templates").glob("*.toml"))
    made = run(bin_dir / "kohya-wrap", "init", "sd15-character", "-o", "mine.toml", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "mine.toml").read_text("utf-8").startswith("# Started from the sd15-character preset")
    from PIL import Image

    (tmp_path / "10_zdm").mkdir()
    Image.new("RGB", (512, 512)).save(tmp_path / "10_zdm" / "a.png")
    checked = run(
        bin_dir / "kohya-wrap", "validate", "mine.toml", "--set", "dataset.dirs=[{path='10_zdm'}]", cwd=tmp_path
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.splitlines()[0] == "ok: sd15 LoRA 'zdm', 1 image × repeats = 10, batch 2, 10 epochs"
