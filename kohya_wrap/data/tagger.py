"""WD14 tagger on onnxruntime: model lookup (folder or hub id), preprocessing, batched inference, tags."""

from __future__ import annotations

import csv
import hashlib
import os
import re
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from kohya_wrap.config.models import TaggingSettings
from kohya_wrap.config.tagger_defaults import CHARACTER_THRESHOLD, GENERAL_THRESHOLD, TAGGER_MODEL
from kohya_wrap.data.captions import backup_captions, caption_path, find_images, tag_key, with_trigger, write_caption
from kohya_wrap.data.images import open_image, pad_square, resize_pixels
from kohya_wrap.data.options import check_option
from kohya_wrap.errors import ConfigError, DatasetError

DEFAULT_MODEL = TAGGER_MODEL
MODEL_FILE = "model.onnx"
TAGS_FILE = "selected_tags.csv"
INT8_FILE = "model.int8.onnx"
# selected_tags.csv categories; anything else is thresholded like a general tag.
RATING, GENERAL, CHARACTER = 9, 0, 4
# The WD14 models' input side; used only when a model leaves its spatial size dynamic.
DEFAULT_INPUT_SIZE = 448
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def cache_dir() -> Path:
    """Where derived files (int8 models) go when the model's own folder cannot take them."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kohya_wrap"


# ---- model files ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelFiles:
    onnx: Path
    tags: Path
    name: str  # what the user gave: folder or hub id
    from_hub: bool


def resolve_model(model: str) -> ModelFiles:
    """A local folder with model.onnx and selected_tags.csv, or a hub id fetched into the HF cache.

    Hub ids follow SmilingWolf's layout: wd-{vit,vit-large,swinv2,convnext,eva02-large}-tagger-v3 and
    wd-v1-4-{vit,swinv2,convnext,convnextv2,moat}-tagger-v2, all NHWC BGR 0–255 models.
    """
    local = local_model(model)
    if local is not None:
        return local
    return ModelFiles(_download(model, MODEL_FILE), _download(model, TAGS_FILE), model, from_hub=True)


def check_model(model: str) -> None:
    """What can be checked of a tagger without downloading or loading it: a local folder has both files and a
    readable tag list; anything else must look like a hub id."""
    local = local_model(model)
    if local is not None:
        read_labels(local.tags)


def local_model(model: str) -> ModelFiles | None:
    """The model's files when `model` is a local folder; None when it is a hub id; DatasetError otherwise."""
    folder = Path(os.path.expanduser(model))
    if folder.is_dir():
        missing = [n for n in (MODEL_FILE, TAGS_FILE) if not (folder / n).is_file()]
        if missing:
            raise DatasetError(
                f"tagging.model: {folder} lacks {' and '.join(missing)}; a tagger folder holds "
                f"{MODEL_FILE} and {TAGS_FILE} (as in SmilingWolf's wd-*-tagger repos)"
            )
        return ModelFiles(folder / MODEL_FILE, folder / TAGS_FILE, model, from_hub=False)
    if folder.exists() or not _HUB_ID.match(model):
        raise DatasetError(
            f"tagging.model: '{model}' is neither a folder with {MODEL_FILE} and {TAGS_FILE} "
            f"nor a hub id like {DEFAULT_MODEL}"
        )
    return None


def _download(repo_id: str, filename: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return Path(hf_hub_download(repo_id, filename))
    except (OSError, ValueError, HfHubHTTPError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise DatasetError(
            f"tagging.model: cannot get {filename} of '{repo_id}' from the Hugging Face hub "
            f"({exc.__class__.__name__}: {reason[:120].strip()}); without network, download {MODEL_FILE} "
            f"and {TAGS_FILE} into a folder and pass that folder (--model PATH)"
        ) from None


@dataclass(frozen=True)
class Labels:
    names: tuple[str, ...]
    categories: tuple[int, ...]


def read_labels(path: Path) -> Labels:
    """selected_tags.csv: `tag_id,name,category,count`; row i names model output i."""
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the tag list ({exc.__class__.__name__})") from None
    if not rows or rows[0][:3] != ["tag_id", "name", "category"]:
        raise DatasetError(f"{path}: expected the header tag_id,name,category,… of a WD14 selected_tags.csv")
    try:
        return Labels(tuple(r[1] for r in rows[1:]), tuple(int(r[2]) for r in rows[1:]))
    except (IndexError, ValueError):
        raise DatasetError(f"{path}: a row lacks a name or a numeric category") from None


# ---- scores → tags -------------------------------------------------------------------------------


def display_name(tag: str, replace_underscores: bool) -> str:
    """The tag as written into captions; like sd-scripts, short tags (kaomoji such as ^_^) keep theirs."""
    return tag.replace("_", " ") if replace_underscores and len(tag) > 3 else tag


@dataclass(frozen=True)
class TagOptions:
    general_threshold: float = GENERAL_THRESHOLD
    character_threshold: float = CHARACTER_THRESHOLD
    rating_tags: bool = False
    replace_underscores: bool = False
    undesired_tags: frozenset[str] = field(default_factory=frozenset)
    always_first_tags: tuple[str, ...] = ()
    trigger_word: str | None = None

    def __post_init__(self) -> None:
        for key in ("general_threshold", "character_threshold", "trigger_word"):
            check_option(TaggingSettings, key, getattr(self, key), f"tagging.{key}")


class TagDecoder:
    """Turns one image's scores into caption tags.

    Order: trigger word, always-first tags (in the order given; sd-scripts puts the last given
    first), rating (if asked), then general and character tags in the model's order, as sd-scripts
    writes them. A tag passes when its score is at least its category's threshold, compared in
    float32 as sd-scripts does; the rating is the best-scoring of the rating tags.
    """

    def __init__(self, labels: Labels, options: TagOptions) -> None:
        self.options = options
        self.names = [display_name(n, options.replace_underscores) for n in labels.names]
        undesired = {tag_key(t) for t in options.undesired_tags}
        categories = np.array(labels.categories)
        thresholds = np.where(categories == CHARACTER, options.character_threshold, options.general_threshold)
        skip = (categories == RATING) | np.array([tag_key(n) in undesired for n in labels.names], dtype=bool)
        self.thresholds = np.where(skip, np.inf, thresholds).astype(np.float32)
        self.ratings = np.flatnonzero(categories == RATING)
        self.undesired = undesired
        self.first = [tag_key(t) for t in options.always_first_tags]

    def decode(self, scores: np.ndarray) -> list[str]:
        tags = [self.names[i] for i in np.flatnonzero(scores.astype(np.float32) >= self.thresholds)]
        if self.options.rating_tags and len(self.ratings):
            rating = self.names[int(self.ratings[int(np.argmax(scores[self.ratings]))])]
            if tag_key(rating) not in self.undesired:
                tags.insert(0, rating)
        if self.first:
            rank = {key: i for i, key in enumerate(self.first)}
            front = sorted((t for t in tags if tag_key(t) in rank), key=lambda t: rank[tag_key(t)])
            tags = front + [t for t in tags if tag_key(t) not in rank]
        return with_trigger(tags, self.options.trigger_word)


# ---- int8 ----------------------------------------------------------------------------------------


def quantized_model(model: Path, from_hub: bool = False, cache: Path | None = None) -> Path:
    """An int8 copy of `model` (dynamic quantisation of MatMul/Gemm weights), made once and reused.

    It goes next to the model as model.int8.onnx when that folder is writable, else into the cache
    (hub downloads always: their folder belongs to huggingface_hub). Only MatMul and Gemm are
    quantised: they carry the transformer's work and have fast int8 kernels, while int8 Conv has none
    on most CPUs and would be slower than float.
    """
    target = model.with_name(INT8_FILE)
    if from_hub or not _writable(model.parent):
        stat = model.stat()
        identity = f"{model.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()
        target = (cache or cache_dir()) / "int8" / hashlib.sha256(identity).hexdigest()[:16] / INT8_FILE
    if target.is_file() and target.stat().st_mtime >= model.stat().st_mtime:
        return target
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic  # type: ignore[import-untyped]
    except ImportError as exc:
        raise DatasetError(f"--int8: needs the onnx package ({exc}); run `pip install onnx`") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".model.int8.", suffix=".onnx", dir=target.parent)
    os.close(fd)
    try:
        quantize_dynamic(model, tmp, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def _writable(folder: Path) -> bool:
    # Trying is the reliable test: os.access misjudges ACLs and network file systems.
    try:
        fd, probe = tempfile.mkstemp(dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True


# ---- inference -----------------------------------------------------------------------------------


Layout = Literal["NHWC", "NCHW"]


def preprocess(path: Path, size: int) -> np.ndarray:
    """The tagger's input for one image: (size, size, 3) float32 BGR 0–255, white-padded to square.

    sd-scripts' convention (`finetune/tag_images_by_wd14_tagger.py::preprocess_image`): alpha on
    white, centred padding with white, INTER_AREA when shrinking, Lanczos when enlarging, no
    normalisation. We also apply the EXIF orientation, which it does not.
    """
    square = pad_square(np.asarray(open_image(path)))
    return resize_pixels(square, size, size)[:, :, ::-1].astype(np.float32)


@dataclass(frozen=True)
class TaggedImage:
    path: Path
    tags: tuple[str, ...]
    error: str | None = None  # set (and tags empty) when the image could not be read


def check_runtime_options(batch_size: int | None, threads: int | None, decode_threads: int | None) -> None:
    """The inference options: each is unset or at least 1."""
    for name, value in (("--batch-size", batch_size), ("--threads", threads), ("--decode-threads", decode_threads)):
        if value is not None and value < 1:
            raise ConfigError(f"{name}: must be 1 or more, got {value}")


def default_decode_threads() -> int:
    # Decoding is a small share of the work on a CPU; half the cores keep inference fed without
    # taking its threads, and a GPU run on a big machine gets up to 8.
    return max(1, min(8, (os.cpu_count() or 2) // 2))


class Tagger:
    """A loaded WD14 model. `tag(paths)` yields results in order, decoding ahead in a thread pool."""

    def __init__(
        self,
        files: ModelFiles,
        options: TagOptions,
        *,
        batch_size: int | None = None,
        threads: int | None = None,
        decode_threads: int | None = None,
        int8: bool = False,
        providers: Sequence[str] | None = None,
    ) -> None:
        import onnxruntime as ort  # type: ignore[import-untyped]

        check_runtime_options(batch_size, threads, decode_threads)
        labels = read_labels(files.tags)
        self.decoder = TagDecoder(labels, options)
        self.model_path = quantized_model(files.onnx, files.from_hub) if int8 else files.onnx
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = threads or 0
        session_options.inter_op_num_threads = 1
        # Idle inference threads sleep instead of spinning, so the decode threads get those cycles
        # (and other programs too); on a busy CPU spinning made inference itself slower.
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if providers is None:
            available = ort.get_available_providers()
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        try:
            self.session = ort.InferenceSession(str(self.model_path), session_options, providers=list(providers))
        # onnxruntime's load errors (InvalidProtobuf, NoSuchFile, Fail, …) share no base but Exception.
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.__class__.__name__
            raise DatasetError(f"tagging.model: onnxruntime cannot load {self.model_path}: {reason}") from None
        self.providers: list[str] = self.session.get_providers()
        model_input = self.session.get_inputs()[0]
        self.input_name: str = model_input.name
        self.layout, self.input_size, fixed_batch = _input_geometry(model_input.shape, self.model_path)
        # On a CPU one image at a time is fastest (bigger batches only add memory traffic); a GPU
        # wants batches to fill it.
        default_batch = 8 if "CUDAExecutionProvider" in self.providers else 1
        self.batch_size = fixed_batch or batch_size or default_batch
        self.fixed_batch = fixed_batch is not None
        outputs = self.session.get_outputs()[0].shape[-1]
        if isinstance(outputs, int) and outputs != len(labels.names):
            raise DatasetError(
                f"tagging.model: {self.model_path.name} has {outputs} outputs but {files.tags.name} "
                f"lists {len(labels.names)} tags; they must come from the same model"
            )
        self.decode_threads = decode_threads or default_decode_threads()

    def scores(self, batch: np.ndarray) -> np.ndarray:
        """Model scores for a (n, size, size, 3) BGR batch; pads fixed-batch models."""
        count = len(batch)
        if self.fixed_batch and count < self.batch_size:
            batch = np.concatenate([batch, np.zeros((self.batch_size - count, *batch.shape[1:]), batch.dtype)])
        if self.layout == "NCHW":
            batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
        output: Any = self.session.run(None, {self.input_name: batch})[0]
        return np.asarray(output)[:count]

    def tag(self, paths: Sequence[Path]) -> Iterator[TaggedImage]:
        """Tag `paths` in order; unreadable images come back with `error` set instead of stopping the run."""
        size = self.input_size
        pool = ThreadPoolExecutor(self.decode_threads, thread_name_prefix="tagger-decode")
        # Decode up to two batches ahead: enough to hide decoding behind inference, little memory.
        ahead = 2 * self.batch_size + self.decode_threads
        pending: deque[tuple[Path, Future[np.ndarray]]] = deque()
        queue = iter(paths)

        def refill() -> None:
            while len(pending) < ahead and (path := next(queue, None)) is not None:
                pending.append((path, pool.submit(preprocess, path, size)))

        try:
            refill()
            while pending:
                ready: list[tuple[Path, np.ndarray]] = []
                failed: list[TaggedImage] = []
                while pending and len(ready) < self.batch_size:
                    path, future = pending.popleft()
                    refill()
                    try:
                        ready.append((path, future.result()))
                    except DatasetError as exc:
                        failed.append(TaggedImage(path, (), exc.lines[0]))
                yield from failed
                if ready:
                    scores = self.scores(np.stack([pixels for _, pixels in ready]))
                    for (path, _), row in zip(ready, scores, strict=True):
                        yield TaggedImage(path, tuple(self.decoder.decode(row)))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _input_geometry(shape: Sequence[Any], model: Path) -> tuple[Layout, int, int | None]:
    """(layout, side, fixed batch size or None) from the model's input shape."""
    if len(shape) == 4 and shape[3] == 3:
        layout: Layout = "NHWC"
        height, width = shape[1], shape[2]
    elif len(shape) == 4 and shape[1] == 3:
        layout = "NCHW"
        height, width = shape[2], shape[3]
    else:
        raise DatasetError(f"tagging.model: {model.name} takes input {list(shape)}, not an image batch "
                           "(N, H, W, 3) or (N, 3, H, W)")  # fmt: skip
    sides = {s for s in (height, width) if isinstance(s, int) and s > 0}
    if len(sides) > 1:
        raise DatasetError(f"tagging.model: {model.name} takes {height}×{width} images; only square inputs work")
    side = sides.pop() if sides else DEFAULT_INPUT_SIZE
    batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    return layout, side, batch


# ---- folders -------------------------------------------------------------------------------------

# (folder, images done, images to do); called with 0 done once the model is loaded.
Progress = Callable[[Path, int, int], None]


def tag_options(settings: TaggingSettings) -> TagOptions:
    """The config's [tagging] values the tagger itself uses."""
    return TagOptions(
        general_threshold=settings.general_threshold,
        character_threshold=settings.character_threshold,
        rating_tags=settings.rating_tags,
        replace_underscores=settings.replace_underscores,
        undesired_tags=frozenset(settings.remove_tags),
        always_first_tags=tuple(settings.always_first_tags),
        trigger_word=settings.trigger_word,
    )


@dataclass(frozen=True)
class FolderTagging:
    folder: Path
    tagged: int  # captions written
    kept: int  # images whose caption was already there and stays
    empty: tuple[Path, ...]  # no tag passed the thresholds, so no caption was written
    failed: tuple[str, ...]  # unreadable images, one line each
    backup: Path | None  # where replaced captions went (with overwrite)


def tag_folder(
    folder: Path,
    make_tagger: Callable[[], Tagger],
    *,
    extension: str = ".txt",
    overwrite: bool = False,
    progress: Progress | None = None,
) -> FolderTagging:
    """Caption the images of `folder` that have no caption (all of them with `overwrite`, after a backup).

    The model is loaded (`make_tagger`) only when there is something to tag.
    """
    images = find_images(folder)
    todo = images if overwrite else [i for i in images if not caption_path(i, extension).is_file()]
    backup = backup_captions(folder, [caption_path(i, extension) for i in todo]) if overwrite else None
    if not todo:
        return FolderTagging(folder, 0, len(images), (), (), backup)
    tagger = make_tagger()
    if progress is not None:
        progress(folder, 0, len(todo))
    tagged, empty, failed = 0, [], []
    for done, result in enumerate(tagger.tag(todo), 1):
        if result.error is not None:
            failed.append(result.error)
        elif not result.tags:
            empty.append(result.path)
        else:
            write_caption(caption_path(result.path, extension), result.tags, overwrite=overwrite)
            tagged += 1
        if progress is not None:
            progress(folder, done, len(todo))
    return FolderTagging(folder, tagged, len(images) - len(todo), tuple(empty), tuple(failed), backup)
