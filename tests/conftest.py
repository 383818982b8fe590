"""Shared fixtures: the sd-scripts checkout, the skip rules for marked tests, and cached e2e assets."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# The asset builders are shared with `make demo` and the benchmarks.
sys.path.insert(0, str(REPO_ROOT / "tools"))
from e2e_assets import BuildFailed, E2EAssets, build_assets, random_model  # noqa: E402

SD_SCRIPTS_DIR = REPO_ROOT / "vendor" / "sd-scripts"
# Gitignored; holds GBs of random models, so it lives beside the checkout rather than in tmp dirs
# that pytest would rebuild every session.
E2E_CACHE = REPO_ROOT / ".e2e-cache"
REQUIRE_SD_SCRIPTS_ENV = "KOHYA_WRAP_REQUIRE_SD_SCRIPTS"
# The modules a real sd-scripts run needs first; library.train_util pulls in most of the rest.
SD_SCRIPTS_IMPORTS = "import accelerate, diffusers, transformers, library.train_util"


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


@pytest.fixture(scope="session")
def e2e_assets() -> E2EAssets:
    """Tokenizers, the random SD1.5 model and 4 captioned 64px images (built once, then cached)."""
    require_sd_scripts()
    return build_e2e_assets()


def build_e2e_assets() -> E2EAssets:
    """The e2e inputs, built into the cache when missing (also used by the benchmarks)."""
    try:
        return build_assets(E2E_CACHE)
    except BuildFailed as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def e2e_sdxl_model(e2e_assets: E2EAssets) -> Path:
    """The random SDXL diffusers folder (about a minute and 5 GB the first time; mark users `slow`)."""
    try:
        return random_model(E2E_CACHE, "sdxl", e2e_assets.tokenizers)
    except BuildFailed as exc:
        pytest.fail(str(exc), pytrace=False)
