"""Offline inputs for a real sd-scripts run, built once into a cache folder: tokenizers, a random model, images.

The tests (tests/conftest.py), the benchmarks and `make demo` all build them here. Only a package registry
is needed: the CLIP merge list comes from the open-clip-torch wheel on PyPI, the models are random.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BUILDERS = Path(__file__).resolve().parent / "e2e"
# The CLIP BPE merge list ships inside this wheel; PyPI is reachable where GitHub and the HF hub are not.
OPEN_CLIP_WHEEL = "open-clip-torch==3.3.0"


class BuildFailed(Exception):
    """A builder command failed; the message holds the command and the end of its output."""


@dataclass(frozen=True)
class E2EAssets:
    """Inputs for a real sd-scripts run on the CPU: tokenizer cache, random SD1.5 model, captioned images."""

    tokenizers: Path
    sd15_model: Path
    images: Path


def run_builder(*argv: str) -> None:
    """Run a command that builds an asset; BuildFailed with its last output lines if it fails."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-30:])
        raise BuildFailed(f"building an asset failed: {' '.join(argv)}\n{tail}")


def asset_key(*parts: str | Path) -> str:
    """A digest of the builder sources (files) and arguments (strings) that an asset comes from."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.read_bytes() if isinstance(part, Path) else part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def cached_asset(cache: Path, name: str, key: str, build: Callable[[Path], None]) -> Path:
    """`<cache>/<name>-<key>`, built by `build(folder)` the first time it is needed.

    A changed builder gives a new key, so the asset is rebuilt and the stale ones are deleted. A file
    lock makes concurrent builds in the same cache wait for one build instead of each spending minutes
    on their own; the folder appears only when complete.
    """
    import fcntl  # here, not at the top: Windows has none

    target = cache / f"{name}-{key}"
    if target.is_dir():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_dir():
            return target
        partial = cache / f"{name}-{key}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        try:
            build(partial)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        partial.rename(target)
        # Asset names are chosen so that no name is another's prefix followed by "-".
        for stale in cache.glob(f"{name}-*"):
            if stale != target:
                shutil.rmtree(stale, ignore_errors=True)
    return target


def builder(script: str) -> Path:
    """The path of a builder script in tools/e2e/."""
    return BUILDERS / script


def open_clip_wheel(cache: Path) -> Path:
    """The open-clip-torch wheel, downloaded once (nothing is installed)."""
    folder = cached_asset(
        cache,
        "wheel",
        asset_key(OPEN_CLIP_WHEEL),
        lambda out: run_builder(
            sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(out), OPEN_CLIP_WHEEL
        ),
    )
    return next(folder.glob("*.whl"))


def tokenizers_dir(cache: Path) -> Path:
    """The tokenizer cache folder for sd-scripts' `tokenizer_cache_dir`."""
    wheel = open_clip_wheel(cache)
    script = builder("build_clip_tokenizer.py")
    return cached_asset(
        cache,
        "tokenizers",
        asset_key(script, wheel.name),
        lambda folder: run_builder(sys.executable, str(script), str(wheel), str(folder)),
    )


def random_model(cache: Path, arch: str, tokenizers: Path) -> Path:
    """A random diffusers model folder for `arch` (sd15 or sdxl)."""
    script = builder("build_random_model.py")
    return cached_asset(
        cache,
        arch,
        asset_key(script, arch, tokenizers.name),
        lambda folder: run_builder(sys.executable, str(script), arch, str(folder), str(tokenizers)),
    )


def sample_images(cache: Path, count: int = 4, size: int = 64) -> Path:
    """`count` captioned `size`-pixel images (coloured squares, trigger word e2etok)."""
    script = builder("make_images.py")
    return cached_asset(
        cache,
        "images",
        asset_key(script, str(count), str(size)),
        lambda folder: run_builder(
            sys.executable, str(script), str(folder), "--count", str(count), "--size", str(size)
        ),
    )


def build_assets(cache: Path) -> E2EAssets:
    """Tokenizers, the random SD1.5 model and 4 captioned 64 px images, built into `cache` when missing."""
    tokenizers = tokenizers_dir(cache)
    return E2EAssets(
        tokenizers=tokenizers, sd15_model=random_model(cache, "sd15", tokenizers), images=sample_images(cache)
    )


# Two sample prompts at 64 px and 2 sampling steps: a sample per prompt per epoch costs seconds on a CPU.
SAMPLE_PROMPTS = (
    '[{ text = "e2etok, a red square", width = 64, height = 64, steps = 2, cfg = 7.0, seed = 1 },'
    ' { text = "e2etok, a blue square", negative = "blurry", width = 64, height = 64, steps = 2 }]'
)


def e2e_config_text(
    model: Path,
    tokenizers: Path,
    images: Path,
    runs_dir: Path,
    *,
    family: str = "sd15",
    epochs: int = 2,
    precision: str = "no",
    output_name: str = "e2e_lora",
    header: str = "",
) -> str:
    """The config of a real run on these inputs: a tiny LoRA at 64 px, samples and a saved LoRA every epoch."""
    return f"""{header}[model]
family = "{family}"
base = "{model}"
tokenizer_cache_dir = "{tokenizers}"

[dataset]
dirs = [{{ path = "{images}" }}]
resolution = 64
enable_bucket = false

[network]
dim = 4
alpha = 2

[optimizer]
type = "AdamW"
learning_rate = 1e-4
scheduler = "constant"

[training]
epochs = {epochs}
batch_size = 1
mixed_precision = "{precision}"
seed = 42
shuffle_tags = false

[sampling]
every_n_epochs = 1
sampler = "euler_a"
prompts = {SAMPLE_PROMPTS}

[save]
output_name = "{output_name}"
every_n_epochs = 1
precision = "fp32"

[run]
runs_dir = "{runs_dir}"
"""
