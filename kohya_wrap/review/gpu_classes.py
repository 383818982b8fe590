"""The GPU memory classes the estimate's tables are kept for; light, so the CLI can offer them in `--help`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

GpuClass = Literal["cpu", "8gb", "12gb", "16gb", "24gb", "48gb", "80gb"]
GPU_CLASSES: tuple[GpuClass, ...] = ("cpu", "8gb", "12gb", "16gb", "24gb", "48gb", "80gb")
CLASS_GB: Mapping[GpuClass, float] = {"8gb": 8, "12gb": 12, "16gb": 16, "24gb": 24, "48gb": 48, "80gb": 80}
