"""Chosen epochs of a run's LoRA at several weights, rendered by sd-scripts' gen_img.py into one grid."""

from __future__ import annotations

import io
import json
import math
import shutil
import tempfile
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kohya_wrap.config.models import Config, Sampler
from kohya_wrap.errors import ConfigError, RunError, SdScriptsError, TrainingInterrupted
from kohya_wrap.files import write_bytes_atomic
from kohya_wrap.review.outputs import LoraFile, collect
from kohya_wrap.review.report import PREVIEW_JSON, PREVIEW_PNG, labelled_grid, write_report
from kohya_wrap.train import launch
from kohya_wrap.train.layout import RunLayout
from kohya_wrap.train.runs import RunRecord, read_record, run_config, sample_prompts

SCRIPT = "gen_img.py"  # sd-scripts' generator for SD1.x, SD2.x and SDXL, with LoRA support
DEFAULT_WEIGHTS = (0.7, 0.8, 1.0)  # the weights SeaArt's walkthrough compares
DEFAULT_EPOCHS = 3  # the last saved epochs shown when none are chosen
PREVIEW_DIR = "preview"  # report/preview/: the single images behind preview.png
TAIL_LINES = 15


@dataclass(frozen=True)
class PreviewPrompt:
    text: str
    negative: str
    width: int
    height: int
    steps: int
    scale: float
    seed: int


@dataclass(frozen=True)
class PreviewCell:
    epoch: int
    weight: float
    prompt: int  # index into the plan's prompts
    file_name: str


@dataclass(frozen=True)
class PreviewPlan:
    launch: launch.LaunchPlan
    prompt_lines: str  # gen_img's --from_file: one line per image, options after " --"
    loras: tuple[LoraFile, ...]  # one network per chosen epoch, in --network_weights order
    weights: tuple[float, ...]
    prompts: tuple[PreviewPrompt, ...]
    cells: tuple[PreviewCell, ...]
    sampler: str
    outdir: Path


def parse_numbers(text: str, what: str, kind: Callable[[str], float]) -> list[float]:
    """'8,10' → [8, 10]; a ConfigError naming the option otherwise."""
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"preview: --{what} takes numbers separated by commas, not '{text}'") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise ConfigError(f"preview: --{what} takes numbers separated by commas, not '{text}'")
    return values


def _prompt_line_problem(text: str) -> str | None:
    # gen_img splits each line at " --" into the prompt and its options, and reads one line per prompt.
    if " --" in text or "\n" in text or "\r" in text:
        return "cannot contain ' --' or a line break (gen_img.py reads them as options or a new prompt)"
    return None


def preview_prompts(
    cfg: Config, layout: RunLayout, texts: Sequence[str], seed: int | None, steps: int | None
) -> tuple[PreviewPrompt, ...]:
    """The given texts with the run's first sample prompt's settings, else that sample prompt itself."""
    samples = sample_prompts(layout)
    res = cfg.dataset.resolution
    base: dict[str, Any] = (
        samples[0]
        if samples
        else {
            "prompt": "",
            "width": res,
            "height": res,
            "sample_steps": 28,
            "seed": cfg.training.seed,
            "scale": 7.0,
        }
    )
    chosen = [dict(base, prompt=t) for t in texts] if texts else [base]
    if not chosen[0]["prompt"]:
        raise ConfigError("preview: the run has no sample prompts; give one with --prompt TEXT")
    prompts = []
    for entry in chosen:
        for key in ("prompt", "negative_prompt"):
            if problem := _prompt_line_problem(str(entry.get(key, ""))):
                raise ConfigError(f"preview: the {key.replace('_', ' ')} {problem}")
        prompts.append(
            PreviewPrompt(
                text=str(entry["prompt"]),
                negative=str(entry.get("negative_prompt", "")),
                width=int(entry.get("width", res)),
                height=int(entry.get("height", res)),
                steps=steps if steps is not None else int(entry.get("sample_steps", 28)),
                scale=float(entry.get("scale", entry.get("guidance_scale", 7.0))),
                seed=seed if seed is not None else int(entry.get("seed", cfg.training.seed)),
            )
        )
    return tuple(prompts)


def choose_loras(files: Sequence[LoraFile], epochs: Sequence[int] | None) -> tuple[LoraFile, ...]:
    by_epoch = {f.epoch: f for f in files if f.epoch is not None}
    if not by_epoch:
        raise RunError("preview: the run has saved no LoRA yet; train it first (or wait for its first epoch)")
    if epochs is None:
        return tuple(by_epoch[e] for e in sorted(by_epoch)[-DEFAULT_EPOCHS:])
    missing = [e for e in epochs if e not in by_epoch]
    if missing:
        raise ConfigError(
            f"preview: --epochs {','.join(map(str, missing))}: no LoRA saved for "
            f"{'that epoch' if len(missing) == 1 else 'those epochs'}; saved epochs: "
            f"{', '.join(map(str, sorted(by_epoch)))}"
        )
    return tuple(by_epoch[e] for e in dict.fromkeys(epochs))


def prompt_lines(
    prompts: Sequence[PreviewPrompt],
    loras: Sequence[LoraFile],
    weights: Sequence[float],
) -> tuple[str, tuple[PreviewCell, ...]]:
    """One gen_img line per (epoch, weight, prompt): every network loaded once, all but one at weight 0."""
    lines, cells = [], []
    for n, lora in enumerate(loras):
        assert lora.epoch is not None
        for weight in weights:
            muls = ",".join(f"{weight:g}" if i == n else "0" for i in range(len(loras)))
            for p, prompt in enumerate(prompts):
                name = f"e{lora.epoch:06d}_w{weight:g}_p{p:02d}.png"
                options = [
                    f"--w {prompt.width}",
                    f"--h {prompt.height}",
                    f"--s {prompt.steps}",
                    f"--l {prompt.scale:g}",
                    f"--d {prompt.seed}",
                    f"--am {muls}",
                    f"--f {name}",
                ]
                if prompt.negative:
                    options.insert(0, f"--n {prompt.negative}")
                lines.append(" ".join([prompt.text, *options]))
                cells.append(PreviewCell(lora.epoch, weight, p, name))
    return "\n".join(lines) + "\n", tuple(cells)


@dataclass(frozen=True)
class PreviewOptions:
    """What to render: epochs (default: the last saved ones), LoRA weights, prompt texts (default: the run's
    first sample prompt) and overrides of the sample prompt's seed and steps and of the run's sampler."""

    epochs: Sequence[int] | None = None
    weights: Sequence[float] = DEFAULT_WEIGHTS
    texts: Sequence[str] = ()
    seed: int | None = None
    steps: int | None = None
    sampler: str | None = None


def plan_preview(
    cfg: Config, layout: RunLayout, record: RunRecord, outdir: Path, options: PreviewOptions = PreviewOptions()
) -> PreviewPlan:
    """The exact gen_img.py command (argv, no shell, cwd = sd-scripts) and what each image it writes shows."""
    sampler, weights = options.sampler, tuple(dict.fromkeys(options.weights))
    choices = typing.get_args(Sampler)
    if sampler is not None and sampler not in choices:
        raise ConfigError(f"preview: --sampler {sampler} is not one of {', '.join(choices)}")
    family = cfg.model.family
    if family == "flux":
        raise ConfigError(
            "preview: Flux LoRAs cannot be previewed yet (sd-scripts' gen_img.py renders SD1.5 and "
            "SDXL); load a LoRA file from the report in ComfyUI or Forge instead"
        )
    root = launch.sd_scripts_dir(cfg)
    if not (root / SCRIPT).is_file():
        raise SdScriptsError(f"sd-scripts: no {SCRIPT} in {root}; run `make setup` or set run.sd_scripts_dir")
    loras = choose_loras(collect(layout, record.name, record.epochs), options.epochs)
    prompts = preview_prompts(cfg, layout, options.texts, options.seed, options.steps)
    lines, cells = prompt_lines(prompts, loras, weights)
    m, tr = cfg.model, cfg.training
    argv = [
        launch.sd_python(cfg),
        SCRIPT,
        "--sdxl" if family == "sdxl" else "--v1",
        "--ckpt",
        m.base,
        "--outdir",
        str(outdir),
        "--from_file",
        str(outdir / "prompts.txt"),
        "--images_per_prompt",
        "1",
        "--batch_size",
        "1",
        "--sampler",
        sampler or cfg.sampling.sampler,
        "--network_module",
        *["networks.lora"] * len(loras),
        "--network_weights",
        *[str(lora.path) for lora in loras],
        "--network_mul",
        *["0"] * len(loras),
    ]
    if tr.mixed_precision in ("fp16", "bf16"):
        argv.append(f"--{tr.mixed_precision}")
    if tr.clip_skip is not None:
        argv += ["--clip_skip", str(tr.clip_skip)]
    if tr.max_token_length > 75:
        argv += ["--max_embeddings_multiples", str(tr.max_token_length // 75)]
    if tr.attention in ("sdpa", "xformers"):
        argv.append(f"--{tr.attention}")
    if m.vae:
        argv += ["--vae", m.vae]
    if m.tokenizer_cache_dir:
        argv += ["--tokenizer_cache_dir", m.tokenizer_cache_dir]
    if m.v_prediction:
        argv.append("--v_parameterization")
        if family == "sdxl":
            argv.append("--zero_terminal_snr")  # as training did (render.py)
    env = launch.child_env()
    if (gpu := launch.first_gpu(cfg)) is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)  # gen_img renders on the first visible GPU
    return PreviewPlan(
        launch.LaunchPlan(tuple(argv), root.resolve(), env),
        lines,
        loras,
        tuple(weights),
        prompts,
        cells,
        sampler or cfg.sampling.sampler,
        outdir,
    )


def render_preview(plan: PreviewPlan) -> bytes:
    """The epoch × weight grid (a row per epoch and prompt) of the images in `plan.outdir`, as PNG bytes."""
    many = len(plan.prompts) > 1
    rows = [(lora.epoch, p) for lora in plan.loras for p in range(len(plan.prompts))]
    labels = [f"epoch {e}" + (f" · #{p + 1}" if many else "") for e, p in rows]
    columns = [f"weight {w:g}" for w in plan.weights]
    cells = {
        (rows.index((c.epoch, c.prompt)), plan.weights.index(c.weight)): plan.outdir / c.file_name
        for c in plan.cells
        if (plan.outdir / c.file_name).is_file()
    }
    buffer = io.BytesIO()
    labelled_grid(labels, columns, cells).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def run_preview(
    run_dir: Path,
    options: PreviewOptions = PreviewOptions(),
    on_text: Callable[[str], None] | None = None,
    note: Callable[[str], None] | None = None,
) -> Path:
    """Generate the preview images, write report/preview.png and refresh the report; returns preview.png.

    `on_text` receives gen_img.py's output as it comes, `note` one line saying what is being rendered.
    """
    layout = RunLayout(run_dir.resolve())
    record = read_record(layout)
    cfg = run_config(layout)
    layout.report_dir.mkdir(parents=True, exist_ok=True)
    # A fresh folder per attempt; it replaces report/preview/ only once every image is written.
    outdir = Path(tempfile.mkdtemp(prefix=".preview-", dir=layout.report_dir))
    try:
        plan = plan_preview(cfg, layout, record, outdir, options)
        (outdir / "prompts.txt").write_text(plan.prompt_lines, encoding="utf-8")
        log = layout.report_dir / "preview.log"
        log.unlink(missing_ok=True)
        if note is not None:
            note(
                f"preview: rendering {len(plan.cells)} images (epochs "
                f"{', '.join(str(lora.epoch) for lora in plan.loras)} × weights "
                f"{', '.join(f'{w:g}' for w in plan.weights)}) with {SCRIPT}; output in {log}"
            )
        tail: list[str] = []

        def collect_text(chunk: str) -> None:
            tail.extend(line for line in chunk.replace("\r", "\n").splitlines() if line.strip())
            del tail[:-TAIL_LINES]
            if on_text is not None:
                on_text(chunk)

        result = launch.run(plan.launch, log, collect_text)
        if result.interrupted:
            raise TrainingInterrupted("preview: interrupted; nothing was replaced")
        missing = [c.file_name for c in plan.cells if not (outdir / c.file_name).is_file()]
        if result.exit_code != 0 or missing:
            raise SdScriptsError(
                f"preview: {SCRIPT} exited with {result.exit_code} and wrote "
                f"{len(plan.cells) - len(missing)} of {len(plan.cells)} images; last lines of {log}:",
                *(f"  {line}" for line in tail),
            )
        target = layout.report_dir / PREVIEW_DIR
        shutil.rmtree(target, ignore_errors=True)
        outdir.rename(target)
        target.chmod(0o755)  # mkdtemp made it private
        plan = replace(plan, outdir=target)
    finally:
        shutil.rmtree(outdir, ignore_errors=True)
    png = layout.report_dir / PREVIEW_PNG
    write_bytes_atomic(png, render_preview(plan))
    meta = {
        "epochs": [lora.epoch for lora in plan.loras],
        "weights": list(plan.weights),
        "sampler": plan.sampler,
        "steps": plan.prompts[0].steps,
        "seed": plan.prompts[0].seed,
        "prompts": [p.text for p in plan.prompts],
        "images": {c.file_name: [c.epoch, c.weight, c.prompt] for c in plan.cells},
    }
    write_bytes_atomic(layout.report_dir / PREVIEW_JSON, (json.dumps(meta, indent=1) + "\n").encode("utf-8"))
    write_report(layout)
    return png
