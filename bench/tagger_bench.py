"""Our WD14 tagger against sd-scripts' tagger script on a wd-vit-tagger-v3-sized model (random weights).

usage: python bench/tagger_bench.py [--rounds N] [--images N] [--batch-size N] [--only PARTS] [--out FILE]

Parts (all by default): e2e (both taggers as commands, start-up included, interleaved, tags compared),
steady (our pipeline vs bare onnxruntime on the same session), int8 (speed and tag agreement against
fp32), captions (statistics and auto-prune over 100k synthetic captions). The model (ViT-B/16 at
448 px, 10,861 outputs, NHWC BGR input, like SmilingWolf/wd-vit-tagger-v3) and the images are built
once into .e2e-cache/ (gitignored) by a child process, so torch never loads where we measure.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import inspect
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SD_SCRIPTS = REPO / "vendor" / "sd-scripts"
CACHE = REPO / ".e2e-cache"
REPO_ID = "local/wd-vit-bench"  # sd-scripts looks for <model_dir>/local_wd-vit-bench
# wd-vit-tagger-v3's label counts: 4 ratings, 8,400 general and 2,457 character tags.
RATINGS, GENERAL, CHARACTERS = 4, 8400, 2457
SIZES = [
    (512, 512),
    (768, 1024),
    (1024, 768),
    (1024, 1024),
    (832, 1216),
    (1216, 832),
    (1536, 1536),
    (2048, 1536),
    (1080, 1920),
    (640, 960),
    (900, 1200),
    (2000, 3000),
]
FORMATS = ["png", "jpg", "webp"]
GOALS = {"e2e": 1.2, "steady": 0.95, "int8": 2.5, "captions_s": 1.0}


# ---- assets (run in a child process: imports torch) ----------------------------------------------


def build_model(folder: Path) -> None:
    """A random ViT-B/16 at 448 px with a sigmoid head of 10,861 tags, exported to ONNX."""
    import torch
    import torchvision

    torch.manual_seed(0)

    class Tagger(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vit = torchvision.models.vit_b_16(image_size=448, num_classes=RATINGS + GENERAL + CHARACTERS)
            head = self.vit.heads.head
            torch.nn.init.normal_(head.weight, std=0.05)
            # About 30 general tags per image pass 0.35, as with real models; no character tag
            # reaches 0.85, because sd-scripts' script crashes on those (UnboundLocalError).
            bias = torch.full((head.out_features,), -4.2)
            bias[:RATINGS] = 0.0
            bias[RATINGS + GENERAL :] = -12.0
            head.bias.data.copy_(bias)

        def forward(self, bgr: torch.Tensor) -> torch.Tensor:
            rgb = bgr.permute(0, 3, 1, 2).flip(1) / 127.5 - 1.0
            return torch.sigmoid(self.vit(rgb))

    model_dir = folder / REPO_ID.replace("/", "_")
    model_dir.mkdir(parents=True)
    torch.onnx.export(
        Tagger().eval(),
        (torch.rand(1, 448, 448, 3) * 255,),
        str(model_dir / "model.onnx"),
        dynamo=False,
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        opset_version=17,
    )
    with (model_dir / "selected_tags.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tag_id", "name", "category", "count"])
        names = ["general", "sensitive", "questionable", "explicit"]
        names += [f"tag_{i:05d}" for i in range(GENERAL)] + [f"character_{i:04d}_(series)" for i in range(CHARACTERS)]
        for i, name in enumerate(names):
            category = 9 if i < RATINGS else (0 if i < RATINGS + GENERAL else 4)
            writer.writerow([i, name, category, 1000])


def build_images(folder: Path, count: int) -> None:
    """`count` illustration-like images of mixed sizes and formats: gradients, shapes, strokes, grain."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = random.Random(0)
    noise = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(count):
        width, height = SIZES[i % len(SIZES)]
        ramp = np.linspace(0, 1, height)[:, None, None]
        start = np.array([rng.randrange(256) for _ in range(3)])
        end = np.array([rng.randrange(256) for _ in range(3)])
        pixels = (start + (end - start) * ramp) * np.ones((1, width, 1))
        image = Image.fromarray(pixels.astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(40):
            x, y = rng.randrange(width), rng.randrange(height)
            r = rng.randrange(10, max(11, width // 4))
            fill = tuple(rng.randrange(256) for _ in range(3))
            draw.ellipse((x - r, y - r, x + r, y + r), fill=fill, outline=(0, 0, 0), width=3)
        for _ in range(60):
            draw.line([(rng.randrange(width), rng.randrange(height)) for _ in range(4)], fill=(20, 20, 20), width=2)
        grain = noise.integers(-6, 7, (height, width, 3))
        image = Image.fromarray(np.clip(np.asarray(image).astype(int) + grain, 0, 255).astype(np.uint8))
        image.save(folder / f"{i:03d}.{FORMATS[i % len(FORMATS)]}", quality=92)


def cached(name: str, source: str, build_args: list[str]) -> Path:
    """`.e2e-cache/<name>-<digest of source>`, built by this script's --build in a child process."""
    target = CACHE / f"{name}-{hashlib.sha256(source.encode()).hexdigest()[:12]}"
    if not target.is_dir():
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        subprocess.run([sys.executable, __file__, "--build", name, str(partial), *build_args], check=True)
        partial.rename(target)
        for stale in CACHE.glob(f"{name}-*"):
            if stale != target:
                shutil.rmtree(stale, ignore_errors=True)
    return target


def assets(count: int) -> tuple[Path, Path]:
    """(models folder, images folder); keyed by the builders' source, so editing them rebuilds."""
    models = cached("tagger-bench-model", inspect.getsource(build_model), [])
    images = cached(
        "tagger-bench-images",
        inspect.getsource(build_images) + repr((SIZES, FORMATS, count)),
        ["--images", str(count)],
    )
    return models, images


# ---- measurements --------------------------------------------------------------------------------


def wait_until_idle(limit_s: float = 120) -> float:
    """Wait (at most `limit_s`) until no other thread wants a CPU for 3 s; returns the 1-min load.

    The machine is shared: a run that starts while another job computes measures that job too.
    Linux only (/proc); elsewhere it returns at once.
    """
    deadline = time.monotonic() + limit_s
    quiet = 0
    while quiet < 3 and time.monotonic() < deadline and Path("/proc/stat").is_file():
        stat = Path("/proc/stat").read_text().splitlines()
        running = int(next(line for line in stat if line.startswith("procs_running")).split()[1])
        quiet = quiet + 1 if running <= 1 else 0  # this process, reading, is the one running
        time.sleep(1)
    return os.getloadavg()[0]


def run_command(argv: list[str], cwd: Path) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds of the child, 1-min load before) for one run of `argv`."""
    load = wait_until_idle()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(argv)}\n{done.stderr[-3000:]}")
    return elapsed, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, load


def read_captions(folder: Path) -> dict[str, str]:
    return {p.stem: p.read_text() for p in sorted(folder.glob("*.txt"))}


def fresh_copy(images: Path, target: Path) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(images, target)
    return target


def bench_e2e(models: Path, images: Path, work: Path, rounds: int, batch: int) -> dict[str, Any]:
    theirs_argv = [
        sys.executable,
        "finetune/tag_images_by_wd14_tagger.py",
        "--onnx",
        "--model_dir",
        str(models),
        "--repo_id",
        REPO_ID,
        "--batch_size",
        str(batch),
        "--general_threshold",
        "0.35",
        "--character_threshold",
        "0.85",
    ]
    ours_argv = [
        sys.executable,
        "-m",
        "kohya_wrap",
        "tag",
        "--model",
        str(models / REPO_ID.replace("/", "_")),
        "--batch-size",
        str(batch),
        "--general-threshold",
        "0.35",
        "--character-threshold",
        "0.85",
    ]
    times: dict[str, list[float]] = {"sd-scripts": [], "kohya-wrap": []}
    cpu: dict[str, list[float]] = {"sd-scripts": [], "kohya-wrap": []}
    loads: list[float] = []
    captions: dict[str, dict[str, str]] = {}
    for _ in range(rounds):
        for name, argv, cwd in (("sd-scripts", theirs_argv, SD_SCRIPTS), ("kohya-wrap", ours_argv, REPO)):
            folder = fresh_copy(images, work / name)
            wall, used, load = run_command([*argv, str(folder)], cwd)
            times[name].append(wall)
            cpu[name].append(used)
            loads.append(load)
            captions[name] = read_captions(folder)
    theirs, ours = captions["sd-scripts"], captions["kohya-wrap"]
    same = sum(theirs.get(stem) == text for stem, text in ours.items())
    tag_counts = [len(t.split(", ")) for t in ours.values()]
    return {
        "times": times,
        "cpu": cpu,
        "loads": loads,
        # Each round's pair ran back to back, so its ratio is the least disturbed by other jobs.
        "speedup": statistics.median(a / b for a, b in zip(times["sd-scripts"], times["kohya-wrap"], strict=True)),
        "cpu_ratio": statistics.median(a / b for a, b in zip(cpu["sd-scripts"], cpu["kohya-wrap"], strict=True)),
        "identical": same,
        "images": len(theirs),
        "captions": len(ours),
        "tags_per_image": statistics.mean(tag_counts) if tag_counts else 0,
        "distinct_captions": len(set(ours.values())),
        "theirs_argv": theirs_argv,
        "ours_argv": ours_argv,
    }


def make_tagger(models: Path, batch: int, int8: bool = False) -> Any:
    from kohya_wrap.data.tagger import Tagger, TagOptions, resolve_model

    files = resolve_model(str(models / REPO_ID.replace("/", "_")))
    return Tagger(files, TagOptions(), batch_size=batch, int8=int8)


def pure_rate(tagger: Any, batches: list[Any]) -> float:
    """Images per second of session.run alone on ready inputs, first call excluded."""
    wait_until_idle()
    tagger.scores(batches[0])
    start = time.perf_counter()
    for batch in batches[1:]:
        tagger.scores(batch)
    return sum(len(b) for b in batches[1:]) / (time.perf_counter() - start)


def pipeline_rate(tagger: Any, paths: list[Path]) -> float:
    """Images per second of our whole pipeline (decode, preprocess, infer, tags), first batch excluded."""
    wait_until_idle()
    stamps = [time.perf_counter() for _ in tagger.tag(paths)]
    first = tagger.batch_size
    return (len(stamps) - first) / (stamps[-1] - stamps[first - 1])


def batches_of(tagger: Any, paths: list[Path]) -> list[Any]:
    import numpy as np

    from kohya_wrap.data.tagger import preprocess

    arrays = [preprocess(p, tagger.input_size) for p in paths]
    size = tagger.batch_size
    return [np.stack(arrays[i : i + size]) for i in range(0, len(arrays), size)]


def bench_steady(models: Path, images: Path, rounds: int, batch: int) -> dict[str, Any]:
    """Our pipeline against bare `session.run` loops on our session and a default one (the faster counts).

    A third run feeds our pipeline inputs decoded beforehand: it shows what the threads and
    queues cost by themselves, apart from the CPU that decoding takes from inference.
    """
    import onnxruntime as ort

    from kohya_wrap.data import tagger as tagger_module

    paths = sorted(images.iterdir())
    tagger = make_tagger(models, batch)
    default = make_tagger(models, batch)
    default.session = ort.InferenceSession(str(default.model_path), providers=["CPUExecutionProvider"])
    batches = batches_of(tagger, paths)
    decoded = dict(zip(paths, (row for b in batches for row in b), strict=True))
    decode = tagger_module.preprocess
    rates: dict[str, list[float]] = {"ours": [], "pure": [], "pure_default": [], "predecoded": []}
    for _ in range(rounds):
        rates["pure_default"].append(pure_rate(default, batches))
        rates["pure"].append(pure_rate(tagger, batches))
        rates["ours"].append(pipeline_rate(tagger, paths))
        tagger_module.preprocess = lambda path, size: decoded[path]
        try:
            rates["predecoded"].append(pipeline_rate(tagger, paths))
        finally:
            tagger_module.preprocess = decode
    best_pure = max(statistics.median(rates["pure"]), statistics.median(rates["pure_default"]))
    return {**rates, "ratio": statistics.median(rates["ours"]) / best_pure}


def decode_cost(images: Path) -> float:
    """CPU seconds per image that decoding and preprocessing take on their own."""
    from kohya_wrap.data.tagger import preprocess

    paths = sorted(images.iterdir())
    start = time.process_time()
    for path in paths:
        preprocess(path, 448)
    return (time.process_time() - start) / len(paths)


def tag_sets(tagger: Any, batches: list[Any]) -> list[set[str]]:
    return [set(tagger.decoder.decode(row)) for batch in batches for row in tagger.scores(batch)]


def bench_int8(models: Path, images: Path, rounds: int, batch: int, timed: int) -> dict[str, Any]:
    from kohya_wrap.data.tagger import quantized_model

    model = models / REPO_ID.replace("/", "_") / "model.onnx"
    start = time.perf_counter()
    fresh = not model.with_name("model.int8.onnx").is_file()
    quantized_model(model)
    quantize_s = time.perf_counter() - start
    paths = sorted(images.iterdir())
    fp32, int8 = make_tagger(models, batch), make_tagger(models, batch, int8=True)
    batches = batches_of(fp32, paths[:timed])
    rates: dict[str, list[float]] = {"fp32": [], "int8": []}
    for _ in range(rounds):
        rates["fp32"].append(pure_rate(fp32, batches))
        rates["int8"].append(pure_rate(int8, batches))
    all_batches = batches_of(fp32, paths)
    reference, quantized = tag_sets(fp32, all_batches), tag_sets(int8, all_batches)
    jaccard = [len(a & b) / len(a | b) if a | b else 1.0 for a, b in zip(reference, quantized, strict=True)]
    kept = sum(len(a & b) for a, b in zip(reference, quantized, strict=True))
    return {
        "rates": rates,
        "speedup": statistics.median(rates["int8"]) / statistics.median(rates["fp32"]),
        "quantize_s": quantize_s if fresh else None,
        "jaccard": statistics.mean(jaccard),
        "recall": kept / max(1, sum(len(a) for a in reference)),
        "precision": kept / max(1, sum(len(b) for b in quantized)),
        "identical": sum(a == b for a, b in zip(reference, quantized, strict=True)),
        "images": len(reference),
    }


def synthetic_captions(count: int) -> list[str]:
    """`count` captions: 8 traits in ~90 % of them plus ~22 of 5,000 tags with Zipf-like frequencies."""
    rng = random.Random(1)
    vocabulary = [f"tag_{i}" for i in range(5000)]
    weights = [1 / (i + 1) for i in range(len(vocabulary))]
    traits = ["green_hair", "suspenders", "green_shorts", "short_sleeves", "shirt", "shorts", "1boy", "solo"]
    captions = []
    for _ in range(count):
        tags = ["zdm"] + [t for t in traits if rng.random() < 0.9] + rng.choices(vocabulary, weights, k=22)
        captions.append(", ".join(tags))
    return captions


def bench_captions(rounds: int) -> dict[str, Any]:
    from kohya_wrap.data.captions import parse_caption, propose_prune, tag_stats

    texts = synthetic_captions(100_000)
    parsed = [parse_caption(t) for t in texts]
    pure, with_parse = [], []
    proposed: tuple[str, ...] = ()
    for _ in range(max(3, rounds)):
        start = time.perf_counter()
        proposed = propose_prune(tag_stats(parsed), trigger="zdm")
        pure.append(time.perf_counter() - start)
        start = time.perf_counter()
        propose_prune(tag_stats(parse_caption(t) for t in texts), trigger="zdm")
        with_parse.append(time.perf_counter() - start)
    return {"stats_prune_s": min(pure), "parse_stats_prune_s": min(with_parse), "proposed": proposed}


# ---- report --------------------------------------------------------------------------------------


def shown(argv: list[str]) -> str:
    """A command as the report shows it: `python`, paths relative to the repository."""
    return " ".join(["python", *(a.replace(f"{REPO}/", "") for a in argv[1:])])


def listed(values: list[float], digits: int = 2) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)


def verdict(value: float, goal: float, higher_is_better: bool = True) -> str:
    met = value >= goal if higher_is_better else value <= goal
    return "yes" if met else "**NO**"


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    cpu = os.cpu_count()
    lines = [
        "# WD14 tagger benchmark",
        "",
        f"Machine: {cpu} CPU cores, no GPU. Command: `python bench/tagger_bench.py --rounds {args.rounds} "
        f"--images {args.images} --batch-size {args.batch_size}`. Model: random ViT-B/16, 448 px, 10,861 "
        "outputs, NHWC BGR (wd-vit-tagger-v3's shape); images: synthetic illustrations of mixed sizes "
        "(512² to 2000×3000) and formats (PNG, JPEG, WebP).",
        "",
    ]
    if "e2e" in results:
        e = results["e2e"]
        t, o = e["times"]["sd-scripts"], e["times"]["kohya-wrap"]
        lines += [
            f"## End to end ({e['images']} images, start-up included, {args.rounds} interleaved rounds)",
            "",
            "| command | wall per run (s) | CPU per run (s) |",
            "|---|---|---|",
            f"| sd-scripts (cwd vendor/sd-scripts): `{shown(e['theirs_argv'])} DIR` | {listed(t, 1)} | "
            f"{listed(e['cpu']['sd-scripts'], 1)} |",
            f"| kohya-wrap: `{shown(e['ours_argv'])} DIR` | {listed(o, 1)} | {listed(e['cpu']['kohya-wrap'], 1)} |",
            "",
            f"Speed-up (median of the rounds' wall-time ratios): **{e['speedup']:.2f}×** (goal ≥ {GOALS['e2e']}×: "
            f"{verdict(e['speedup'], GOALS['e2e'])}); CPU time ratio {e['cpu_ratio']:.2f}×; 1-min load "
            f"before each run: {listed(e['loads'])}. "
            f"Identical captions: **{e['identical']}/{e['images']}** ({e['tags_per_image']:.1f} tags per "
            f"image, {e['distinct_captions']} distinct captions).",
            "",
        ]
    if "steady" in results:
        s = results["steady"]
        lines += [
            "## Steady state (in one process, first batch excluded)",
            "",
            f"- bare `session.run` on pre-decoded inputs, our session: {listed(s['pure'])} images/s; "
            f"a default `InferenceSession`: {listed(s['pure_default'])} images/s",
            f"- our pipeline (decode + preprocess in a thread, inference, tag decoding): {listed(s['ours'])} images/s",
            f"- our pipeline fed inputs decoded beforehand: {listed(s['predecoded'])} images/s",
            f"- decoding and preprocessing alone: {s['decode_ms']:.0f} ms CPU per image",
            f"- ours / the faster bare loop (medians): **{s['ratio']:.3f}** (goal ≥ {GOALS['steady']}: "
            f"{verdict(s['ratio'], GOALS['steady'])})",
            "",
        ]
    if "int8" in results:
        q = results["int8"]
        made = f"{q['quantize_s']:.1f} s once" if q["quantize_s"] is not None else "cached"
        lines += [
            "## int8 (dynamic quantisation of MatMul/Gemm, `--int8`)",
            "",
            f"- fp32 `session.run`: {listed(q['rates']['fp32'])} images/s; int8: {listed(q['rates']['int8'])} images/s",
            f"- speed-up: **{q['speedup']:.2f}×** (goal ≥ {GOALS['int8']}×: "
            f"{verdict(q['speedup'], GOALS['int8'])}); quantising: {made}",
            f"- tags vs fp32 over {q['images']} images: mean Jaccard {q['jaccard']:.3f}, recall "
            f"{q['recall']:.3f}, precision {q['precision']:.3f}, identical tag sets "
            f"{q['identical']}/{q['images']}",
            "",
        ]
    if "captions" in results:
        c = results["captions"]
        lines += [
            "## Caption statistics and auto-prune (100,000 synthetic captions, ~30 tags each, best of 3)",
            "",
            f"- `tag_stats` + `propose_prune` on parsed captions: **{c['stats_prune_s']:.3f} s** (goal ≤ "
            f"{GOALS['captions_s']:g} s: {verdict(c['stats_prune_s'], GOALS['captions_s'], False)})",
            f"- including parsing the caption text: {c['parse_stats_prune_s']:.3f} s",
            f"- proposed: {', '.join(c['proposed'])}",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--only", default="e2e,steady,int8,captions")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--build", nargs=2, metavar=("ASSET", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        name, folder = args.build
        build_model(Path(folder)) if name == "tagger-bench-model" else build_images(Path(folder), args.images)
        return
    parts = set(args.only.split(","))
    results: dict[str, Any] = {}
    if "captions" in parts:
        results["captions"] = bench_captions(args.rounds)
    if parts - {"captions"}:
        models, images = assets(args.images)
        work = CACHE / "tagger-bench-work"
        if "e2e" in parts:
            results["e2e"] = bench_e2e(models, images, work, args.rounds, args.batch_size)
        if "steady" in parts:
            results["steady"] = bench_steady(models, images, args.rounds, args.batch_size)
            results["steady"]["decode_ms"] = decode_cost(images) * 1000
        if "int8" in parts:
            results["int8"] = bench_int8(models, images, args.rounds, args.batch_size, min(16, args.images))
        shutil.rmtree(work, ignore_errors=True)
    text = report(results, args)
    print(text)
    print(json.dumps(results, default=str), file=sys.stderr)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
