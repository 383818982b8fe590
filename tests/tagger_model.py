"""A tiny deterministic WD14-style ONNX tagger for tests: tags follow the colours of the image's quadrants."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

# The model averages each BGR channel over the 2×2 quadrants of its input: 12 features in [0, 1],
# indexed channel * 4 + row * 2 + column (channel 0 = blue, as the input is BGR). Each output is
# sigmoid(STEEPNESS * (feature - centre)), so a quadrant colour decides each score exactly.
STEEPNESS = 20.0
QUADRANTS = {"top_left": 0, "top_right": 1, "bottom_left": 2, "bottom_right": 3}
CHANNELS = {"blue": 0, "green": 1, "red": 2}


@dataclass(frozen=True)
class TagSpec:
    name: str
    category: int  # 9 rating, 0 general, 4 character
    quadrant: str | None  # None: constant score `centre` (ratings)
    channel: str = "blue"
    centre: float = 0.5

    @property
    def feature(self) -> int:
        assert self.quadrant is not None
        return CHANNELS[self.channel] * 4 + QUADRANTS[self.quadrant]


# Ratings first, then general, then character tags: the order of SmilingWolf's selected_tags.csv.
# The top half of an image is the character (SeaArt's walkthrough: Zundamon's look), the bottom half
# the pose and background.
TAGS = (
    TagSpec("general", 9, None, centre=0.9),
    TagSpec("sensitive", 9, "bottom_right", "red"),
    TagSpec("questionable", 9, None, centre=0.01),
    TagSpec("explicit", 9, None, centre=0.01),
    TagSpec("green_hair", 0, "top_left", "blue"),
    TagSpec("green_sailor_collar", 0, "top_left", "blue"),
    TagSpec("suspenders", 0, "top_left", "green"),
    TagSpec("suspender_shorts", 0, "top_left", "green"),
    TagSpec("green_shorts", 0, "top_left", "red"),
    TagSpec("shorts", 0, "top_left", "red"),
    TagSpec("short_sleeves", 0, "top_right", "blue"),
    TagSpec("shirt", 0, "top_right", "blue"),
    TagSpec("green_footwear", 0, "top_right", "green"),
    TagSpec("1boy", 0, "top_right", "red"),
    TagSpec("standing", 0, "bottom_left", "blue"),
    TagSpec("sitting", 0, "bottom_left", "green"),
    TagSpec("smile", 0, "bottom_left", "red"),
    TagSpec("outdoors", 0, "bottom_right", "blue"),
    TagSpec("simple_background", 0, "bottom_right", "green"),
    TagSpec("holding_flower", 0, "bottom_right", "red"),
    TagSpec("^_^", 0, "bottom_left", "red", centre=0.7),
    # Full green in the top-left quadrant scores sigmoid(20 × 0.1) ≈ 0.881.
    TagSpec("zundamon", 4, "top_left", "green", centre=0.9),
)
CHARACTER_LOOK = (
    "green_hair",
    "green_sailor_collar",
    "suspenders",
    "suspender_shorts",
    "green_shorts",
    "shorts",
    "short_sleeves",
    "shirt",
    "green_footwear",
)


def score(spec: TagSpec, feature_value: float) -> float:
    """The score the model gives `spec` for a feature value in [0, 1] (for expected values in tests)."""
    if spec.quadrant is None:
        return spec.centre
    return 1 / (1 + math.exp(-STEEPNESS * (feature_value - spec.centre)))


def write_tags_csv(path: Path, tags: tuple[TagSpec, ...] = TAGS) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tag_id", "name", "category", "count"])
        for i, spec in enumerate(tags):
            writer.writerow([1000 + i, spec.name, spec.category, 100 - i])


def build_tagger_model(
    folder: Path,
    size: int = 448,
    layout: str = "NHWC",
    batch: int | None = None,
    tags: tuple[TagSpec, ...] = TAGS,
) -> Path:
    """Write model.onnx and selected_tags.csv into `folder` (created) and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = np.zeros((12, len(tags)), np.float32)
    bias = np.zeros(len(tags), np.float32)
    for i, spec in enumerate(tags):
        if spec.quadrant is None:
            bias[i] = math.log(spec.centre / (1 - spec.centre))
        else:
            weights[spec.feature, i] = STEEPNESS
            bias[i] = -STEEPNESS * spec.centre
    batch_dim: int | str = batch if batch is not None else "batch"
    if layout == "NHWC":
        shape = [batch_dim, size, size, 3]
        nodes = [helper.make_node("Transpose", ["input_1"], ["nchw"], perm=[0, 3, 1, 2])]
    else:
        shape = [batch_dim, 3, size, size]
        nodes = [helper.make_node("Identity", ["input_1"], ["nchw"])]
    half = size // 2
    nodes += [
        helper.make_node("AveragePool", ["nchw"], ["pooled"], kernel_shape=[half, half], strides=[half, half]),
        helper.make_node("Reshape", ["pooled", "flat_shape"], ["flat"]),
        helper.make_node("Mul", ["flat", "inv255"], ["features"]),
        helper.make_node("MatMul", ["features", "weights"], ["logits_raw"]),
        helper.make_node("Add", ["logits_raw", "bias"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["predictions_sigmoid"]),
    ]
    initializers = [
        numpy_helper.from_array(np.array([-1, 12], np.int64), "flat_shape"),
        numpy_helper.from_array(np.array(1 / 255, np.float32), "inv255"),
        numpy_helper.from_array(weights, "weights"),
        numpy_helper.from_array(bias, "bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_wd14",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, [batch_dim, len(tags)])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, folder / "model.onnx")
    write_tags_csv(folder / "selected_tags.csv", tags)
    return folder


def quadrant_image(
    path: Path,
    top_left: tuple[int, int, int],
    top_right: tuple[int, int, int],
    bottom_left: tuple[int, int, int],
    bottom_right: tuple[int, int, int],
    size: int = 64,
) -> Path:
    """A size × size image of four solid RGB quadrants, saved in the format of `path`'s extension."""
    pixels = np.zeros((size, size, 3), np.uint8)
    half = size // 2
    pixels[:half, :half] = top_left
    pixels[:half, half:] = top_right
    pixels[half:, :half] = bottom_left
    pixels[half:, half:] = bottom_right
    Image.fromarray(pixels).save(path)
    return path
