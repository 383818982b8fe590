"""Shared fixtures: the sd-scripts checkout, the skip rules for marked tests, and cached e2e assets."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SD_SCRIPTS_DIR = REPO_ROOT / "vendor" / "sd-scripts"
E2E_BUILDERS = Path(__file__).resolve().parent / "e2e"
# Gitignored; holds GBs of random models, so it lives beside the checkout rather than in tmp dirs
# that pytest would rebuild every session.
E2E_CACHE = REPO_ROOT / ".e2e-cache"
REQUIRE_SD_SCRIPTS_ENV = "KOHYA_WRAP_REQUIRE_SD_SCRIPTS"
# The CLIP BPE merge list ships inside this wheel; PyPI is reachable where GitHub and the HF hub are not.
OPEN_CLIP_WHEEL = "open-clip-torch==3.3.0"
# The modules a real sd-scripts run needs first; library.train_util pulls in most of the rest.
SD_SCRIPTS_IMPORTS = "import accelerate, diffusers, transformers, library.train_util"


@dataclass(frozen=True)
class E2EAssets:
    """Inputs for a real sd-scripts run on the CPU: tokenizer cache, random SD1.5 model, captioned images."""

    tokenizers: Path
    sd15_model: Path
    images: Path


@functools.cache
def sd_scripts_problem() -> str | None:
    """Why real sd-scripts code cannot run here, or None when it can (checked once per session)."""
    if not (SD_SCRIPTS_DIR / "train_network.py").is_file():
        return f"{SD_SCRIPTS_DIR.relative_to(REPO_ROOT)}/train_network.py not found"
    # A child process: importing sd-scripts adds a Rich root log handler and takes seconds.
    done = subprocess.run(
        [sys.executable, "-c", SD_SCRIPTS_IMPORTS],
        cwd=SD_SCRIPTS_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        last_line = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return f"`{SD_SCRIPTS_IMPORTS}` failed: {last_line}"
    return None


def require_sd_scripts() -> None:
    """Skip the current test when sd-scripts cannot run, or fail it where the environment demands it."""
    problem = sd_scripts_problem()
    if problem is None:
        return
    reason = f"sd-scripts checkout or its requirements missing (run `make setup`): {problem}"
    if os.environ.get(REQUIRE_SD_SCRIPTS_ENV) == "1":
        pytest.fail(f"{reason} [{REQUIRE_SD_SCRIPTS_ENV}=1]", pytrace=False)
    pytest.skip(reason)


@functools.cache
def cuda_problem() -> str | None:
    """Why no CUDA GPU can be used, or None when one can."""
    try:
        import torch
    except ImportError as exc:
        return f"torch does not import: {exc}"
    return None if torch.cuda.is_available() else "torch.cuda.is_available() is False"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Checked here, not at collection, so a run that selects no marked test never pays for the check.
    if item.get_closest_marker("sd_scripts") is not None:
        require_sd_scripts()
    if item.get_closest_marker("gpu") is not None and (problem := cuda_problem()) is not None:
        pytest.skip(f"needs a CUDA GPU: {problem}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # The per-test reason is easy to miss among other skips; say it once where nobody can miss it.
    if sd_scripts_problem.cache_info().currsize and (problem := sd_scripts_problem()) is not None:
        terminalreporter.write_sep("!", f"sd_scripts tests did not run: {problem}", red=True, bold=True)


@pytest.fixture(scope="session")
def sd_scripts_dir() -> Path:
    """The vendored sd-scripts checkout (tests using it should be marked `sd_scripts`)."""
    return SD_SCRIPTS_DIR


def run_builder(*argv: str) -> None:
    """Run a command that builds an asset, failing the test with its output if it fails."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-30:])
        pytest.fail(f"building an e2e asset failed: {' '.join(argv)}\n{tail}", pytrace=False)


def asset_key(*parts: str | Path) -> str:
    """A digest of the builder sources (files) and arguments (strings) that an asset comes from."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.read_bytes() if isinstance(part, Path) else part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def cached_asset(name: str, key: str, build: Callable[[Path], None]) -> Path:
    """`.e2e-cache/<name>-<key>`, built by `build(folder)` the first time it is needed.

    A changed builder gives a new key, so the asset is rebuilt and the stale ones are deleted. A
    file lock makes concurrent sessions in the same checkout wait for one build instead of
    each spending minutes on their own; the folder appears only when complete.
    """
    import fcntl  # here, not at the top: Windows has none, and only the e2e tests need it

    target = E2E_CACHE / f"{name}-{key}"
    if target.is_dir():
        return target
    E2E_CACHE.mkdir(exist_ok=True)
    with open(E2E_CACHE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_dir():
            return target
        partial = E2E_CACHE / f"{name}-{key}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        try:
            build(partial)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        partial.rename(target)
        # Asset names are chosen so that no name is another's prefix followed by "-".
        for stale in E2E_CACHE.glob(f"{name}-*"):
            if stale != target:
                shutil.rmtree(stale, ignore_errors=True)
    return target


def builder(script: str) -> Path:
    """The path of a builder script in tests/e2e/."""
    return E2E_BUILDERS / script


def open_clip_wheel() -> Path:
    """The open-clip-torch wheel, downloaded once (nothing is installed)."""
    folder = cached_asset(
        "wheel",
        asset_key(OPEN_CLIP_WHEEL),
        lambda out: run_builder(
            sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(out), OPEN_CLIP_WHEEL
        ),
    )
    return next(folder.glob("*.whl"))


def tokenizers_dir() -> Path:
    """The tokenizer cache folder for sd-scripts' `tokenizer_cache_dir`."""
    wheel = open_clip_wheel()
    script = builder("build_clip_tokenizer.py")
    return cached_asset(
        "tokenizers",
        asset_key(script, wheel.name),
        lambda folder: run_builder(sys.executable, str(script), str(wheel), str(folder)),
    )


def random_model(arch: str, tokenizers: Path) -> Path:
    """A random diffusers model folder for `arch` (sd15 or sdxl)."""
    script = builder("build_random_model.py")
    return cached_asset(
        arch,
        asset_key(script, arch, tokenizers.name),
        lambda folder: run_builder(sys.executable, str(script), arch, str(folder), str(tokenizers)),
    )


@pytest.fixture(scope="session")
def e2e_assets() -> E2EAssets:
    """Tokenizers, the random SD1.5 model and 4 captioned 64px images (built once, then cached)."""
    require_sd_scripts()
    return build_e2e_assets()


def build_e2e_assets() -> E2EAssets:
    """The e2e inputs, built into the cache when missing (also used by the benchmarks)."""
    tokenizers = tokenizers_dir()
    script = builder("make_images.py")
    images = cached_asset(
        "images",
        asset_key(script, "4", "64"),
        lambda folder: run_builder(sys.executable, str(script), str(folder), "--count", "4", "--size", "64"),
    )
    return E2EAssets(tokenizers=tokenizers, sd15_model=random_model("sd15", tokenizers), images=images)


@pytest.fixture(scope="session")
def e2e_sdxl_model(e2e_assets: E2EAssets) -> Path:
    """The random SDXL diffusers folder (about a minute and 5 GB the first time; mark users `slow`)."""
    return random_model("sdxl", e2e_assets.tokenizers)
