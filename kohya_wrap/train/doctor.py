"""Pre-flight checks: can a run start here, and if not, exactly what to fix."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kohya_wrap.config.models import OPTIMIZER_PACKAGES, Config
from kohya_wrap.train.launch import default_sd_scripts_dir, git_head, sd_python, sd_scripts_dir
from kohya_wrap.train.sd_args import load_spec

Level = Literal["ok", "warn", "fail"]
MIN_FREE_DISK_GB = 5.0
# Tokenizers sd-scripts loads per family, as `<tokenizer_cache_dir>/<repo id with / → _>`.
TOKENIZERS = {
    "sd15": ("openai_clip-vit-large-patch14",),
    "sdxl": ("openai_clip-vit-large-patch14", "laion_CLIP-ViT-bigG-14-laion2B-39B-b160k"),
    "flux": ("openai_clip-vit-large-patch14", "google_t5-v1_1-xxl"),
}

# Runs in the interpreter that will run sd-scripts (cwd = the checkout), so it sees that venv.
PROBE = r"""
import json, sys
out = {"python": sys.version.split()[0]}
def version(name):
    try:
        from importlib.metadata import version as v
        return v(name)
    except Exception:
        return None
for name in ("torch", "accelerate", "transformers", "diffusers", "bitsandbytes", "dadaptation", "prodigyopt",
             "lion-pytorch", "xformers"):
    out[name] = version(name)
try:
    import torch
    out["cuda"] = torch.cuda.is_available()
    if out["cuda"]:
        free, total = torch.cuda.mem_get_info()
        out["gpu"] = torch.cuda.get_device_name(0)
        out["gpu_count"] = torch.cuda.device_count()
        out["vram_free_gb"] = free / 2**30
        out["vram_total_gb"] = total / 2**30
        out["bf16"] = torch.cuda.is_bf16_supported()
except Exception as exc:
    out["torch_error"] = f"{type(exc).__name__}: {exc}"
try:
    import library.train_util  # noqa: F401
    out["train_util"] = True
except Exception as exc:
    out["train_util"] = f"{type(exc).__name__}: {exc}"
print("KOHYA_WRAP_PROBE " + json.dumps(out))
"""


# Asked of the sd-scripts interpreter before a launch whose precision needs a GPU. Without CUDA it also times
# one bf16 matrix product against fp32: a CPU without native bf16 (AVX512-BF16, AMX) runs bf16 through
# reference kernels, 30-400 times slower as sizes grow (measured: 512² 31×, SDXL's convolutions 180×), so an
# SDXL step that takes seconds takes minutes. With native bf16 the product is faster than fp32.
CUDA_PROBE = r"""
import time, torch
cuda = torch.cuda.is_available()
print('KOHYA_WRAP_CUDA', cuda)
def best(dtype):
    a = torch.randn(512, 512, dtype=dtype)
    times = []
    for _ in range(4):
        start = time.perf_counter()
        a @ a
        times.append(time.perf_counter() - start)
    return min(times[1:])
if not cuda:
    print('KOHYA_WRAP_BF16_SLOWDOWN', best(torch.bfloat16) / best(torch.float32))
"""
# bf16 this many times slower than fp32 on the CPU means emulated kernels (native bf16 is faster than fp32).
SLOW_BF16 = 8.0


@dataclass(frozen=True)
class CpuProbe:
    """What the sd-scripts interpreter says of this machine: CUDA, and how much slower bf16 runs on its CPU."""

    cuda: bool
    bf16_slowdown: float | None = None


def cpu_probe(python: str) -> CpuProbe | None:
    """Ask the sd-scripts interpreter (importing torch takes seconds); None when it cannot tell."""
    try:
        done = subprocess.run([python, "-c", CUDA_PROBE], capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = done.stdout.splitlines()
    if "KOHYA_WRAP_CUDA True" in lines:
        return CpuProbe(cuda=True)
    if "KOHYA_WRAP_CUDA False" not in lines:
        return None
    slowdown = next((line.split()[1] for line in lines if line.startswith("KOHYA_WRAP_BF16_SLOWDOWN ")), None)
    try:
        return CpuProbe(cuda=False, bf16_slowdown=float(slowdown) if slowdown else None)
    except ValueError:
        return CpuProbe(cuda=False)


def cpu_precision_problem(cfg: Config) -> str | None:
    """A mixed precision that stops sd-scripts when the run lands on the CPU, as a `section.key: message` line.

    Only when nvidia-smi lists no GPU is the sd-scripts interpreter asked whether it sees CUDA and how fast its
    CPU runs bf16 (importing torch takes seconds); when it cannot tell, sd-scripts decides (and the failure
    triage explains it). bf16 that works but crawls is refused too: a run that would take days is not a run.
    """
    precision = cfg.training.mixed_precision
    if precision not in ("fp16", "bf16") or nvidia_gpu_listed():
        return None
    found = cpu_probe(sd_python(cfg))
    if found is None or found.cuda:
        return None
    if precision == "fp16":
        reason = "accelerate refuses fp16 without a GPU"
    elif cfg.model.family == "sd15":
        reason = 'SD1.5\'s text encoder stops in bf16 ("mixed dtype (CPU)")'
    elif found.bf16_slowdown is not None and found.bf16_slowdown >= SLOW_BF16:
        reason = (
            f"bf16 has no native support (AVX512-BF16 or AMX): a small product ran {found.bf16_slowdown:.0f}× "
            "slower than fp32, a model's larger layers slower still"
        )
    else:
        return None
    return (
        f'training.mixed_precision: "{precision}" cannot run here: sd-scripts sees no CUDA GPU, so it would train '
        f'on the CPU, where {reason}; set training.mixed_precision = "no"'
    )


def nvidia_gpu_listed() -> bool:
    """Whether `nvidia-smi -L` lists a GPU (a fast call: no torch, no CUDA initialisation)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return False
    try:
        done = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and "GPU" in done.stdout


@dataclass(frozen=True)
class Check:
    name: str
    level: Level
    detail: str
    fix: str = ""


def probe(python: str, cwd: Path) -> dict[str, Any]:
    """What the sd-scripts interpreter has: versions, CUDA, GPU memory, whether sd-scripts imports."""
    try:
        proc = subprocess.run([python, "-c", PROBE], cwd=cwd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": str(exc)}
    for line in proc.stdout.splitlines():
        if line.startswith("KOHYA_WRAP_PROBE "):
            result: dict[str, Any] = json.loads(line.removeprefix("KOHYA_WRAP_PROBE "))
            return result
    return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}


def check_checkout(root: Path) -> list[Check]:
    if not (root / "train_network.py").is_file():
        return [
            Check(
                "sd-scripts",
                "fail",
                f"no sd-scripts checkout at {root}",
                "run `make setup` (fetches the vendor/sd-scripts submodule) or set run.sd_scripts_dir",
            )
        ]
    pinned = load_spec().sd_scripts_commit
    head = git_head(root)
    if head != pinned:
        return [
            Check(
                "sd-scripts",
                "warn",
                f"{root} is at {head or 'an unknown commit'}, kohya_wrap is checked against {pinned[:12]}",
                "run `git submodule update vendor/sd-scripts`",
            )
        ]
    return [Check("sd-scripts", "ok", f"{root} at the pinned commit {pinned[:12]}")]


def check_interpreter(info: dict[str, Any], python: str) -> list[Check]:
    if "error" in info:
        return [
            Check(
                "interpreter",
                "fail",
                f"{python} did not run: {info['error']}",
                "set run.python to a Python with sd-scripts' requirements, or run `make setup`",
            )
        ]
    checks = [Check("python", "ok", f"{python} (Python {info['python']})")]
    if info.get("torch") is None or "torch_error" in info:
        checks.append(
            Check(
                "torch",
                "fail",
                info.get("torch_error", "torch is not installed"),
                "install torch into that interpreter (`make setup`)",
            )
        )
    elif info.get("cuda"):
        checks.append(
            Check(
                "gpu",
                "ok",
                f"{info['gpu']} ×{info['gpu_count']}, {info['vram_free_gb']:.1f} of "
                f"{info['vram_total_gb']:.1f} GiB free, bf16 {'yes' if info['bf16'] else 'no'}",
            )
        )
    else:
        checks.append(
            Check(
                "gpu",
                "warn",
                f"torch {info['torch']} sees no CUDA GPU: training runs on the CPU (hours for real models)",
                "install a CUDA build of torch matching your driver",
            )
        )
    transformers = info.get("transformers")
    if transformers and int(transformers.split(".")[0]) >= 5:
        checks.append(
            Check(
                "transformers",
                "fail",
                f"transformers {transformers} breaks sd-scripts",
                "pip install 'transformers<5' (sd-scripts pins 4.54.1)",
            )
        )
    if info.get("train_util") is not True:
        checks.append(
            Check(
                "sd-scripts import",
                "fail",
                f"library.train_util does not import: {info.get('train_util')}",
                "install sd-scripts' requirements: cd vendor/sd-scripts && pip install -r requirements.txt",
            )
        )
    else:
        checks.append(Check("sd-scripts import", "ok", "library.train_util imports"))
    return checks


def check_accelerate_default() -> Check:
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    default = Path(os.environ.get("ACCELERATE_CONFIG_FILE", home / "accelerate" / "default_config.yaml"))
    if default.exists():
        return Check(
            "accelerate config", "ok", f"{default} exists but is not used: each run passes its own accelerate.yaml"
        )
    return Check("accelerate config", "ok", "no default accelerate config; each run passes its own accelerate.yaml")


def _path_check(name: str, value: str | None, required: bool) -> Check | None:
    if value is None:
        return Check(name, "fail", "not set", f"set {name} in the config") if required else None
    path = Path(value)
    if path.exists():
        return Check(name, "ok", str(path))
    if not path.is_absolute() and value.count("/") == 1:
        return Check(
            name,
            "warn",
            f"'{value}' is not a local path, so sd-scripts will download it from the Hugging Face hub",
            "download it once and point the config at the file",
        )
    return Check(name, "fail", f"not found: {value}", f"fix {name} (a .safetensors file or a diffusers folder)")


def check_model_files(cfg: Config) -> list[Check]:
    m = cfg.model
    return [
        c
        for c in (
            _path_check("model.base", m.base, True),
            _path_check("model.vae", m.vae, False),
            *(_path_check(f"model.{k}", getattr(m, k), m.family == "flux") for k in ("clip_l", "t5xxl", "ae")),
        )
        if c is not None
    ]


def model_file_problems(cfg: Config) -> list[str]:
    """`section.key: message` lines for model files that do not exist (hub ids pass)."""
    return [f"{c.name}: {c.detail}; {c.fix}" for c in check_model_files(cfg) if c.level == "fail"]


def check_config(cfg: Config, info: dict[str, Any]) -> list[Check]:
    m = cfg.model
    checks = check_model_files(cfg)
    needed = TOKENIZERS[m.family]
    if m.tokenizer_cache_dir is None:
        checks.append(
            Check(
                "tokenizers",
                "warn",
                "model.tokenizer_cache_dir is not set: sd-scripts downloads tokenizers from the hub at start",
                "set it to a folder with saved tokenizers for offline runs",
            )
        )
    else:
        missing = [t for t in needed if not (Path(m.tokenizer_cache_dir) / t).is_dir()]
        checks.append(
            Check(
                "tokenizers",
                "warn",
                f"missing in {m.tokenizer_cache_dir}: {', '.join(missing)} (sd-scripts will download them)",
                "save them there for offline runs",
            )
            if missing
            else Check("tokenizers", "ok", f"{m.tokenizer_cache_dir} has {', '.join(needed)}")
        )
    package = OPTIMIZER_PACKAGES.get(cfg.optimizer.type)
    if package and "error" not in info and info.get(package.replace("_", "-")) is None:
        checks.append(
            Check(
                "optimizer",
                "fail",
                f"{cfg.optimizer.type} needs the '{package}' package",
                f"pip install {package.replace('_', '-')} (into the sd-scripts interpreter)",
            )
        )
    if cfg.training.attention == "xformers" and "error" not in info and info.get("xformers") is None:
        checks.append(
            Check(
                "xformers",
                "fail",
                "training.attention = xformers but xformers is not installed",
                "pip install -e '.[xformers]', or use attention = \"sdpa\"",
            )
        )
    if cfg.training.mixed_precision == "bf16" and info.get("cuda") and not info.get("bf16"):
        checks.append(
            Check("precision", "fail", f"{info.get('gpu')} has no bf16", 'set training.mixed_precision = "fp16"')
        )
    runs = Path(cfg.run.runs_dir).expanduser()
    probe_dir = next((p for p in (runs, *runs.resolve().parents) if p.exists()), Path.cwd())
    free_gb = shutil.disk_usage(probe_dir).free / 2**30
    checks.append(
        Check(
            "disk",
            "ok" if free_gb >= MIN_FREE_DISK_GB else "fail",
            f"{free_gb:.1f} GiB free for {runs}",
            "" if free_gb >= MIN_FREE_DISK_GB else "free some disk or set run.runs_dir",
        )
    )
    return checks


def probe_config(cfg: Config | None) -> dict[str, Any]:
    """`probe` of the interpreter and checkout a config (or, without one, the defaults) would train with."""
    root = sd_scripts_dir(cfg) if cfg else default_sd_scripts_dir()
    return probe(sd_python(cfg), root if root.is_dir() else Path.cwd())


def diagnose(cfg: Config | None) -> list[Check]:
    """Every check, in the order a user would fix them."""
    root = sd_scripts_dir(cfg) if cfg else default_sd_scripts_dir()
    python = sd_python(cfg)
    checks = check_checkout(root)
    info = probe_config(cfg)
    checks += check_interpreter(info, python)
    checks.append(check_accelerate_default())
    if cfg is not None:
        checks += check_config(cfg, info)
    return checks
