"""The GPU a run will use: its memory class and free memory, from nvidia-smi, the sd-scripts interpreter or the user."""

from __future__ import annotations

import math
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kohya_wrap.errors import ConfigError
from kohya_wrap.review.gpu_classes import CLASS_GB, GPU_CLASSES, GpuClass

GIB = 2**30


@dataclass(frozen=True)
class Hardware:
    gpu_class: GpuClass
    name: str
    free_gb: float | None = None
    total_gb: float | None = None


def gpu_class_of(total_gb: float) -> GpuClass:
    """The table class of a GPU with `total_gb` GiB (an "8 GB" card reports about 7.6 GiB)."""
    for gpu_class, floor in (("80gb", 70), ("48gb", 40), ("24gb", 20), ("16gb", 14), ("12gb", 10)):
        if total_gb >= floor:
            return gpu_class  # type: ignore[return-value]
    return "8gb"


def assumed_hardware(gpu_class: str | None, free_gb: float | None) -> Hardware:
    """The hardware a user names: a class (all its memory free unless `free_gb` says less) or free memory."""
    if free_gb is not None and not (math.isfinite(free_gb) and free_gb > 0):
        raise ConfigError(f"--free-vram: must be the GPU's free memory in GB (a number above 0), got {free_gb}")
    chosen = next((c for c in GPU_CLASSES if c == gpu_class), None) or gpu_class_of(free_gb or 0.0)
    if chosen == "cpu":
        return Hardware("cpu", "a CPU")
    total = CLASS_GB[chosen]
    article = "an" if f"{total:.0f}".startswith("8") else "a"
    free = free_gb if free_gb is not None else total
    return Hardware(chosen, f"{article} {total:.0f} GB-class GPU", free, total)


def parse_nvidia_smi(text: str, index: int = 0) -> Hardware | None:
    """Hardware from `nvidia-smi --query-gpu=name,memory.total,memory.free --format=csv,noheader,nounits`."""
    rows = [line.split(",") for line in text.strip().splitlines() if line.strip()]
    if not 0 <= index < len(rows) or len(rows[index]) != 3:
        return None
    name, total, free = (cell.strip() for cell in rows[index])
    try:
        total_gb, free_gb = float(total) * 2**20 / GIB, float(free) * 2**20 / GIB
    except ValueError:
        return None
    return Hardware(gpu_class_of(total_gb), name, free_gb, total_gb)


def query_nvidia_smi(index: int = 0, timeout: float = 5.0) -> Hardware | None:
    """The GPU's free memory right now, or None without nvidia-smi (a fast call: no torch, no CUDA init)."""
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,memory.free", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_nvidia_smi(done.stdout, index)


def hardware_from_probe(info: Mapping[str, Any]) -> Hardware | None:
    """Hardware from `doctor.probe` (the sd-scripts interpreter's view); None when it did not run."""
    if "error" in info or info.get("torch") is None or "torch_error" in info:
        return None
    if not info.get("cuda"):
        return Hardware("cpu", "CPU")
    total = float(info["vram_total_gb"])
    return Hardware(gpu_class_of(total), str(info.get("gpu", "GPU")), float(info["vram_free_gb"]), total)
