"""The `kohya-wrap` command line: parse, call the core, print, map errors to exit codes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from kohya_wrap.errors import KohyaWrapError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from kohya_wrap.dataset import DatasetReport, StepPlan
    from kohya_wrap.layout import RunLayout
    from kohya_wrap.presets import LoadedConfig
    from kohya_wrap.settings import CropMode
    from kohya_wrap.tagger import FolderTagging

# Heavy modules (pydantic models, torch, onnxruntime, rich) are imported inside commands so that
# `--help` and `validate` start fast.

CONFIG_ARG = click.argument("config", type=click.Path(path_type=Path), required=False)
SET_OPTION = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value, e.g. --set training.epochs=5 (value is TOML; repeatable).",
)
PRESET_OPTION = click.option("--preset", help="Start from this preset (see `kohya-wrap presets`).")


def echo_err(line: str) -> None:
    click.echo(line, err=True)


class Group(click.Group):
    """Turns our errors into one line each on stderr and the documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KohyaWrapError as exc:
            for line in exc.lines:
                echo_err(line)
            ctx.exit(exc.exit_code)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kohya-wrap")
def main() -> None:
    """SeaArt-style LoRA training on your own machine, through kohya-ss/sd-scripts."""


def _load(config: Path | None, overrides: tuple[str, ...], preset: str | None) -> LoadedConfig:
    from kohya_wrap.errors import ConfigError
    from kohya_wrap.presets import load_config

    if config is None and preset is None:
        raise ConfigError("config: give a config file or --preset NAME (see `kohya-wrap presets`)")
    return load_config(config, overrides, preset)


def _scan(loaded: LoadedConfig) -> tuple[DatasetReport, StepPlan]:
    from kohya_wrap.dataset import plan_steps, scan

    report = scan(loaded.config)
    return report, plan_steps(loaded.config, report)


def _print_warnings(lines: list[str]) -> None:
    for line in lines:
        echo_err(f"warning: {line}")


@main.command()
def presets() -> None:
    """List the presets (templates/*.toml)."""
    from kohya_wrap.presets import list_presets

    for name, summary in list_presets():
        click.echo(f"{name:28} {summary}")


@main.command()
@click.argument("preset")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write here instead of stdout.")
def init(preset: str, output: Path | None) -> None:
    """Start a config from PRESET (prints it, or writes it with -o; never overwrites)."""
    from kohya_wrap.errors import ConfigError
    from kohya_wrap.files import write_new_file
    from kohya_wrap.presets import preset_path

    preset_path(preset)  # an unknown name fails here, with a suggestion
    text = (
        f"# Started from the {preset} preset; `preset` pulls in its values, keys below override them.\n"
        f'preset = "{preset}"\n\n' + INIT_BODY
    )
    if output is None:
        click.echo(text, nl=False)
        return
    if output.exists():
        raise ConfigError(f"init: {output} already exists; choose another name or delete it first")
    write_new_file(output, text)
    click.echo(f"wrote {output}; edit model.base and dataset.dirs, then `kohya-wrap validate {output}`")


INIT_BODY = """\
[model]
# A .safetensors checkpoint, a diffusers folder or a hub id.
base = "path/to/checkpoint.safetensors"

[dataset]
# kohya-style folder names work: "20_zdm 1boy" = 20 repeats, caption fallback "zdm 1boy".
dirs = [{ path = "path/to/images" }]

[tagging]
trigger_word = "zdm"

[sampling]
prompts = [{ text = "zdm, 1boy, solo, looking at viewer" }]

[save]
output_name = "zdm"
"""


@main.command()
@CONFIG_ARG
@SET_OPTION
@PRESET_OPTION
def validate(config: Path | None, overrides: tuple[str, ...], preset: str | None) -> None:
    """Check CONFIG and its dataset; print warnings and the step count. Loads no model."""
    from kohya_wrap.doctor import model_file_problems

    loaded = _load(config, overrides, preset)
    report, plan = _scan(loaded)
    _print_warnings(loaded.config.warnings() + report.warnings() + model_file_problems(loaded.config))
    _print_plan(loaded, plan)


def _print_plan(loaded: LoadedConfig, plan: StepPlan, read_gpu: bool = False, quiet: bool = False) -> None:
    """The plan and its time, VRAM and cost estimate on stdout (unless quiet); its warnings on stderr.

    Only `train` reads the GPU's free memory (nvidia-smi, well under a second); validate stays instant.
    """
    from kohya_wrap.estimate import describe, estimate, measured_runs, query_nvidia_smi, warnings
    from kohya_wrap.runs import runs_dir

    cfg = loaded.config
    gpu = cfg.run.gpu_ids[0] if isinstance(cfg.run.gpu_ids, list) and cfg.run.gpu_ids else 0
    est = estimate(cfg, plan, query_nvidia_smi(gpu) if read_gpu else None, measured_runs(runs_dir(cfg)))
    if not quiet:
        reg = f" + {plan.reg_images_with_repeats} regularisation" if plan.reg_images_with_repeats else ""
        click.echo(
            f"ok: {cfg.model.family} LoRA '{cfg.output_name}', {plan.images} images × repeats = "
            f"{plan.images_with_repeats}{reg}, batch {plan.batch_size}, {plan.epochs} epochs"
        )
        processes = f" (over {plan.num_processes} processes)" if plan.num_processes > 1 else ""
        steps = f"{plan.batches_per_epoch} per epoch × {plan.epochs} epochs = {plan.total_steps}"
        click.echo(f"steps: {steps}{processes}")
        for line in describe(est):
            click.echo(line)
    _print_warnings(warnings(est))


@main.command()
@CONFIG_ARG
@SET_OPTION
@PRESET_OPTION
@click.option("-o", "--output", type=click.Path(path_type=Path), help="New folder to write the files into.")
@click.option("--new-run", is_flag=True, help="Write into a new run folder under run.runs_dir instead.")
def render(
    config: Path | None, overrides: tuple[str, ...], preset: str | None, output: Path | None, new_run: bool
) -> None:
    """Write the files sd-scripts would read for CONFIG into a new folder."""
    from kohya_wrap.errors import ConfigError
    from kohya_wrap.runs import create_run, write_rendered_folder

    if (output is None) == (not new_run):
        raise ConfigError("render: give either -o DIR or --new-run")
    loaded = _load(config, overrides, preset)
    _, plan = _scan(loaded)
    _print_warnings(loaded.config.warnings())
    if new_run:
        layout = create_run(loaded, plan)
    else:
        assert output is not None
        layout = write_rendered_folder(output, loaded, plan)
    click.echo(f"rendered into {layout.root}")


@main.command()
@CONFIG_ARG
@SET_OPTION
@PRESET_OPTION
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(path_type=Path),
    help="Continue RUN_DIR from its last saved state (no CONFIG then).",
)
@click.option("--dry-run", is_flag=True, help="Print the command and the rendered files; start nothing.")
@click.option("--json", "json_lines", is_flag=True, help="Stream events as JSON lines on stdout.")
@click.option("-v", "--verbose", is_flag=True, help="Also show sd-scripts' own output live.")
def train(
    config: Path | None,
    overrides: tuple[str, ...],
    preset: str | None,
    resume_dir: Path | None,
    dry_run: bool,
    json_lines: bool,
    verbose: bool,
) -> None:
    """Train a LoRA with sd-scripts: new run folder, live progress, per-epoch LoRAs, report."""
    from kohya_wrap.doctor import model_file_problems
    from kohya_wrap.errors import ConfigError
    from kohya_wrap.launch import require_script
    from kohya_wrap.layout import RunLayout
    from kohya_wrap.progress import make_view
    from kohya_wrap.runner import execute
    from kohya_wrap.runs import create_run
    from kohya_wrap.sd_args import SCRIPT_BY_FAMILY

    if resume_dir is not None:
        if config is not None or overrides or preset:
            raise ConfigError("train: --resume continues a run with its own config; drop CONFIG, --set and --preset")
        layout = RunLayout(resume_dir.resolve())
        _prefetch_report()
        try:
            execute(layout, make_view(json_lines, verbose), resume=True)
        finally:
            _finish_report(layout, json_lines)
        return
    loaded = _load(config, overrides, preset)
    if problems := model_file_problems(loaded.config):
        raise ConfigError(*problems)
    report, plan = _scan(loaded)
    _print_warnings(loaded.config.warnings() + report.warnings())
    if dry_run:
        _print_dry_run(loaded, plan)
        return
    require_script(loaded.config, SCRIPT_BY_FAMILY[loaded.config.model.family])
    _print_plan(loaded, plan, read_gpu=True, quiet=json_lines)
    layout = create_run(loaded, plan)
    click.echo(f"run folder: {layout.root}", err=json_lines)
    _prefetch_report()
    try:
        execute(layout, make_view(json_lines, verbose), report)
    finally:
        _finish_report(layout, json_lines)


def _prefetch_report() -> None:
    """Import the report's plotting libraries while sd-scripts loads its model, not after training."""
    import importlib
    import threading

    threading.Thread(target=importlib.import_module, args=("kohya_wrap.report",), daemon=True).start()


def _finish_report(layout: RunLayout, json_lines: bool = False) -> None:
    """The run's report, also for failed and interrupted runs (it shows what exists)."""
    from kohya_wrap.report import write_report

    click.echo(f"report: {write_report(layout)}", err=json_lines)


def _print_dry_run(loaded: LoadedConfig, plan: StepPlan) -> None:
    from kohya_wrap.launch import plan_training
    from kohya_wrap.layout import RunLayout
    from kohya_wrap.render import render
    from kohya_wrap.runs import runs_dir

    cfg = loaded.config
    layout = RunLayout(runs_dir(cfg) / f"{cfg.output_name}-<timestamp>")
    rendered = render(cfg, layout, plan)
    _print_plan(loaded, plan)
    for name, text in rendered.files(layout).items():
        click.echo(f"\n--- {layout.root / name}\n{text}", nl=False)
    click.echo("\n--- command\n" + plan_training(cfg, layout, rendered.script).command_text(), nl=False)


@main.command()
@click.option("--runs-dir", type=click.Path(path_type=Path), default=Path("runs"), show_default=True)
def runs(runs_dir: Path) -> None:
    """List runs with their status."""
    from kohya_wrap.runs import list_runs

    found = list_runs(runs_dir.resolve())
    if not found:
        click.echo(f"no runs in {runs_dir}")
    for layout, record in found:
        if record is None:
            click.echo(f"{layout.root.name:40} unreadable run.json")
            continue
        ended = record.ended or record.started or record.created
        click.echo(
            f"{layout.root.name:40} {record.status:12} {record.family:5} {record.total_steps:>6} steps  "
            f"{ended}  {record.reason or ''}".rstrip()
        )


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--metadata", is_flag=True, help="Also print each LoRA's ss_* metadata.")
def outputs(run_dir: Path, metadata: bool) -> None:
    """List a run's LoRA per epoch with its size and sample images."""
    from kohya_wrap.layout import RunLayout
    from kohya_wrap.outputs import MetadataError, collect, read_metadata
    from kohya_wrap.runs import read_record

    layout = RunLayout(run_dir.resolve())
    record = read_record(layout)
    files = collect(layout, record.name, record.epochs)
    if not files:
        click.echo(f"no LoRA files yet in {layout.output_dir} (run status: {record.status})")
    for lora in files:
        label = f"epoch {lora.epoch}" if lora.epoch is not None else f"step {lora.step}"
        click.echo(
            f"{label:10} {lora.size / 2**20:8.1f} MiB  {lora.path.relative_to(layout.root)}"
            + ("  (final)" if lora.final else "")
        )
        for sample in lora.samples:
            click.echo(f"{'':10} sample    {sample.relative_to(layout.root)}")
        if metadata:
            try:
                meta = read_metadata(lora.path)
            except MetadataError as exc:
                click.echo(f"{'':10} {exc}")
                continue
            for key in sorted(meta):
                click.echo(f"{'':10} {key} = {meta[key][:200]}")


@main.command()
@CONFIG_ARG
@SET_OPTION
@PRESET_OPTION
def doctor(config: Path | None, overrides: tuple[str, ...], preset: str | None) -> None:
    """Check that a run can start here (sd-scripts, interpreter, GPU, model files, disk); exit 0 only if so."""
    from kohya_wrap.doctor import diagnose

    cfg = _load(config, overrides, preset).config if (config or preset) else None
    checks = diagnose(cfg)
    marks = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}
    for check in checks:
        click.echo(f"{marks[check.level]}  {check.name}: {check.detail}")
        if check.fix and check.level != "ok":
            click.echo(f"      fix: {check.fix}")
    failed = [c for c in checks if c.level == "fail"]
    if failed:
        click.echo(f"{len(failed)} problem(s) stop a run; fix them and run `kohya-wrap doctor` again", err=True)
        raise SystemExit(2)
    click.echo("a run can start")


# Options `tag` and `prepare` share: how the tagger runs, not what it writes.
OVERWRITE_OPTION = click.option(
    "--overwrite", is_flag=True, help="Re-tag images that have a caption (the old ones are backed up)."
)
BATCH_SIZE_OPTION = click.option(
    "--batch-size", type=int, help="Images per inference call [default: 1 on a CPU, 8 on a GPU]."
)
THREADS_OPTION = click.option("--threads", type=int, help="CPU threads for inference [default: all cores].")
INT8_OPTION = click.option(
    "--int8", is_flag=True, help="Run an int8 copy of the tagger: faster on CPUs, tags differ slightly."
)


def _tag_progress() -> Callable[[Path, int, int], None]:
    """Plain progress lines on stderr: about every 10 % of a folder, with the rate so far."""
    import time

    started: dict[Path, float] = {}

    def report(folder: Path, done: int, total: int) -> None:
        if done == 0:
            started[folder] = time.monotonic()
            echo_err(f"{folder.name}: tagging {_count(total, 'image')}")
        elif done == total or done % max(1, min(50, total // 10)) == 0:
            rate = done / max(time.monotonic() - started[folder], 1e-6)
            echo_err(f"{folder.name}: tagged {done}/{total} ({rate:.1f} images/s)")

    return report


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _names(paths: Sequence[Path], limit: int = 5) -> str:
    shown = ", ".join(p.name for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _print_tagging(result: FolderTagging) -> None:
    line = (
        f"{result.folder}: {_count(result.tagged, 'caption')} written, "
        f"{_count(result.kept, 'image')} kept {'its' if result.kept == 1 else 'their'} caption"
    )
    click.echo(line + (f" (originals backed up in {result.backup})" if result.backup else ""))
    if result.empty:
        echo_err(
            f"warning: {result.folder}: no tag passed the thresholds for {_names(result.empty)}; "
            "no caption written (lower --general-threshold or caption them by hand)"
        )


@main.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.option(
    "--model",
    help="Tagger: a folder with model.onnx and selected_tags.csv, or a hub id [default: SmilingWolf/wd-vit-tagger-v3].",
)
@click.option(
    "--general-threshold",
    type=float,
    default=0.35,
    show_default=True,
    help="Keep general tags scoring at least this (higher: fewer, surer tags).",
)
@click.option(
    "--character-threshold",
    type=float,
    default=0.85,
    show_default=True,
    help="Keep character tags scoring at least this.",
)
@click.option("--trigger", help="Trigger word, put first in every caption (existing ones too).")
@click.option(
    "--crop",
    type=click.Choice(["none", "center", "focus"]),
    default="none",
    show_default=True,
    help="Crop to squares into --out: center, or focus (around the most detailed region).",
)
@click.option("--crop-size", type=int, help="Side of the cropped images, e.g. 512 (SD1.5) or 1024 (SDXL).")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="New folder for the prepared images and captions [default: caption FOLDER in place].",
)
@OVERWRITE_OPTION
@BATCH_SIZE_OPTION
@THREADS_OPTION
@click.option("--decode-threads", type=int, help="Threads decoding images ahead of inference.")
@INT8_OPTION
@click.option("--rating-tags", is_flag=True, help="Add the rating tag (general, sensitive, …).")
@click.option("--replace-underscores", is_flag=True, help="Write 'green hair' instead of 'green_hair'.")
@click.option("--undesired", metavar="TAG,TAG", help="Tags never written.")
@click.option("--always-first", metavar="TAG,TAG", help="Tags moved to the front, in this order.")
@click.option("--caption-extension", default=".txt", show_default=True, help="Caption file extension.")
def tag(
    folder: Path,
    model: str | None,
    general_threshold: float,
    character_threshold: float,
    trigger: str | None,
    crop: CropMode,
    crop_size: int | None,
    out: Path | None,
    overwrite: bool,
    batch_size: int | None,
    threads: int | None,
    decode_threads: int | None,
    int8: bool,
    rating_tags: bool,
    replace_underscores: bool,
    undesired: str | None,
    always_first: str | None,
    caption_extension: str,
) -> None:
    """Caption the images in FOLDER with a WD14 tagger; images with a caption keep it."""
    from kohya_wrap.captions import (
        CaptionEdit,
        apply_plan,
        find_images,
        load_captions,
        parse_caption,
        plan_edit,
    )
    from kohya_wrap.errors import ConfigError, DatasetError
    from kohya_wrap.imaging import prepare_folder
    from kohya_wrap.tagger import DEFAULT_MODEL, Tagger, TagOptions, resolve_model, tag_folder

    options = TagOptions(
        general_threshold=general_threshold,
        character_threshold=character_threshold,
        rating_tags=rating_tags,
        replace_underscores=replace_underscores,
        undesired_tags=frozenset(parse_caption(undesired or "")),
        always_first_tags=tuple(parse_caption(always_first or "")),
        trigger_word=trigger,
    )
    if crop_size is not None and crop == "none":
        raise ConfigError("--crop-size: only used with --crop center or --crop focus")
    if crop != "none" and out is None:
        raise ConfigError(f"--crop {crop}: cropped copies go into a new folder; give --out DIR")
    if crop_size is not None and not 64 <= crop_size <= 8192:
        raise ConfigError(f"--crop-size: must be between 64 and 8192, got {crop_size}")
    ext = caption_extension if caption_extension.startswith(".") else "." + caption_extension
    if out is not None:
        prepare_folder(folder, out, crop, crop_size, (ext,))
        folder = out

    def make_tagger() -> Tagger:
        return Tagger(
            resolve_model(model or DEFAULT_MODEL),
            options,
            batch_size=batch_size,
            threads=threads,
            decode_threads=decode_threads,
            int8=int8,
        )

    result = tag_folder(folder, make_tagger, extension=ext, overwrite=overwrite, progress=_tag_progress())
    _print_tagging(result)
    if trigger:
        plan = plan_edit(load_captions(find_images(folder), ext), CaptionEdit(trigger=trigger))
        backup = apply_plan(folder, plan)
        if plan.changes:
            click.echo(
                f"{folder}: put '{trigger}' first in {_count(len(plan.changes), 'existing caption')} "
                f"(originals backed up in {backup})"
            )
    if result.failed:
        raise DatasetError(*result.failed)


@main.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--remove", metavar="TAG,TAG", help="Remove these tags from every caption.")
@click.option("--replace", multiple=True, metavar="OLD=NEW", help="Replace a tag (repeatable, or OLD=NEW,OLD=NEW).")
@click.option("--auto-prune", is_flag=True, help="Remove the tags most images share: the character's own traits.")
@click.option(
    "--min-share",
    type=float,
    default=0.6,
    show_default=True,
    help="Auto-prune: share of the images a tag must be in to go.",
)
@click.option("--keep", metavar="TAG,TAG", help="Auto-prune never removes these (added to the generic keep-list).")
@click.option("--trigger", help="Put this trigger word first in every caption (never pruned).")
@click.option("--apply", "apply_changes", is_flag=True, help="Write the changes; without it, only show them.")
@click.option("--caption-extension", default=".txt", show_default=True, help="Caption file extension.")
def tags(
    folder: Path,
    remove: str | None,
    replace: tuple[str, ...],
    auto_prune: bool,
    min_share: float,
    keep: str | None,
    trigger: str | None,
    apply_changes: bool,
    caption_extension: str,
) -> None:
    """Show how often each tag occurs in FOLDER's captions; remove, replace or auto-prune tags in bulk."""
    from kohya_wrap.captions import (
        DEFAULT_KEEP,
        CaptionEdit,
        apply_plan,
        find_images,
        load_captions,
        parse_caption,
        parse_replacements,
        plan_edit,
        propose_prune,
        tag_key,
        tag_stats,
    )
    from kohya_wrap.errors import DatasetError

    ext = caption_extension if caption_extension.startswith(".") else "." + caption_extension
    replacements = parse_replacements(replace)
    images = find_images(folder)
    captions = load_captions(images, ext)
    if not captions:
        raise DatasetError(f"{folder}: no {ext} captions; run `kohya-wrap tag {folder}` first")
    stats = tag_stats(captions.values())
    click.echo(
        f"{stats.images} captioned images in {folder}"
        + (f" ({len(images) - stats.images} without a caption)" if len(images) > stats.images else "")
    )
    click.echo("images  share  tag")
    for count in stats.tags:
        click.echo(f"{count.images:6}  {count.share:5.0%}  {count.tag}")
    removed = parse_caption(remove or "")
    proposed: tuple[str, ...] = ()
    if auto_prune:
        proposed = propose_prune(stats, min_share, DEFAULT_KEEP | set(parse_caption(keep or "")), trigger)
        click.echo(
            f"auto-prune: {_count(len(proposed), 'tag')} in at least {min_share:.0%} of the images and "
            f"not in the keep-list: {', '.join(proposed) or '-'}"
        )
    plan = plan_edit(captions, CaptionEdit(frozenset(removed) | set(proposed), replacements, trigger))
    images_with = {tag_key(c.tag): c.images for c in stats.tags}
    for name in removed:
        click.echo(f"remove {name}: {_count(images_with.get(tag_key(name), 0), 'caption')}")
    for old, new in replacements.items():
        click.echo(f"replace {old} → {new}: {_count(images_with.get(tag_key(old), 0), 'caption')}")
    if plan.emptied:
        echo_err(
            f"warning: {len(plan.emptied)} captions would be left empty and stay as they are: {_names(plan.emptied)}"
        )
    if not plan.changes:
        if removed or proposed or replacements or trigger:
            click.echo("nothing to change")
        return
    if not apply_changes:
        click.echo(
            f"dry run: {len(plan.changes)} of {stats.images} captions would change; add --apply to write "
            f"them (the originals are backed up in {folder}/.kohya_wrap-backup/)"
        )
        return
    backup = apply_plan(folder, plan)
    click.echo(f"changed {len(plan.changes)} captions; originals backed up in {backup}")


@main.command()
@click.argument("config", type=click.Path(path_type=Path))
@SET_OPTION
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Where cropped copies go, one folder per dataset folder [default: prepared/ beside CONFIG].",
)
@OVERWRITE_OPTION
@BATCH_SIZE_OPTION
@THREADS_OPTION
@INT8_OPTION
def prepare(
    config: Path,
    overrides: tuple[str, ...],
    out: Path | None,
    overwrite: bool,
    batch_size: int | None,
    threads: int | None,
    int8: bool,
) -> None:
    """Run CONFIG's [dataset] and [tagging] steps: crop into new folders, tag, edit, auto-prune."""
    from kohya_wrap.errors import DatasetError
    from kohya_wrap.tagger import Tagger, prepare_dataset, resolve_model, tag_options

    cfg = _load(config, overrides, None).config
    options = tag_options(cfg.tagging)

    def make_tagger() -> Tagger:
        return Tagger(resolve_model(cfg.tagging.model), options, batch_size=batch_size, threads=threads, int8=int8)

    out_root = out or config.resolve().parent / "prepared"
    done = prepare_dataset(cfg, out_root, make_tagger, overwrite=overwrite, progress=_tag_progress())
    for index in done.skipped:
        click.echo(f"dataset.dirs.{index}: regularisation folder, left as it is")
    for prepared in done.dirs:
        _print_tagging(prepared.tagging)
        if prepared.edited:
            click.echo(
                f"{prepared.folder}: trigger word and tag edits changed {_count(prepared.edited, 'caption')} "
                f"(originals backed up in {prepared.backup})"
            )
    if done.proposed and cfg.tagging.auto_prune:
        click.echo(f"auto-prune: {', '.join(done.proposed)} removed from {_count(done.pruned, 'caption')}")
    elif done.proposed:
        click.echo(
            f"auto-prune: {', '.join(done.proposed)} proposed for removal (set tagging.auto_prune = true, "
            "or run `kohya-wrap tags DIR --auto-prune --apply`)"
        )
    for prepared in done.dirs:
        if prepared.folder != prepared.source:
            click.echo(
                f"dataset.dirs.{prepared.index}.path: the prepared images are in {prepared.folder}; point "
                "the config at that folder to train on them"
            )
    failed = [line for prepared in done.dirs for line in prepared.tagging.failed]
    if failed:
        raise DatasetError(*failed)


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
def report(run_dir: Path) -> None:
    """Write RUN_DIR's report: sample grid, loss curve, LoRA files, timings (unfinished runs too)."""
    from kohya_wrap.layout import RunLayout
    from kohya_wrap.report import write_report
    from kohya_wrap.runs import read_record

    layout = RunLayout(run_dir.resolve())
    read_record(layout)  # one clear line for a folder that is not a run
    click.echo(f"report: {write_report(layout)}")


# estimate.GPU_CLASSES, repeated so that --help need not import the estimate module.
GPU_CLASSES = ("cpu", "8gb", "12gb", "16gb", "24gb", "48gb", "80gb")


@main.command("estimate")
@CONFIG_ARG
@SET_OPTION
@PRESET_OPTION
@click.option(
    "--gpu",
    "gpu_class",
    type=click.Choice(GPU_CLASSES),
    help="Estimate for a GPU of this memory class instead of the one found here.",
)
@click.option("--free-vram", type=float, metavar="GB", help="Free GPU memory to check the peak against.")
@click.option(
    "--probe",
    is_flag=True,
    help="Ask the sd-scripts interpreter's torch about the GPU (slower; works without nvidia-smi).",
)
def estimate_command(
    config: Path | None,
    overrides: tuple[str, ...],
    preset: str | None,
    gpu_class: str | None,
    free_vram: float | None,
    probe: bool,
) -> None:
    """Estimate CONFIG's steps, time, peak VRAM (with the cheapest fixes) and SeaArt cost."""
    import sys

    from kohya_wrap import estimate as est
    from kohya_wrap.runs import runs_dir

    loaded = _load(config, overrides, preset)
    _, plan = _scan(loaded)
    cfg = loaded.config
    hardware: est.Hardware | None
    if gpu_class is not None or free_vram is not None:
        hardware = est.assumed_hardware(gpu_class, free_vram)
    elif probe:
        from kohya_wrap.doctor import probe as probe_interpreter
        from kohya_wrap.launch import sd_scripts_dir

        root = sd_scripts_dir(cfg)
        info = probe_interpreter(cfg.run.python or sys.executable, root if root.is_dir() else Path.cwd())
        hardware = est.hardware_from_probe(info)
    else:
        gpu = cfg.run.gpu_ids[0] if isinstance(cfg.run.gpu_ids, list) and cfg.run.gpu_ids else 0
        hardware = est.query_nvidia_smi(gpu)
    if hardware is None:
        echo_err("note: no GPU found (nvidia-smi); give --gpu CLASS or --free-vram GB to check a GPU's memory")
    # Earlier runs tell how fast this machine is, not a GPU the user names.
    history = est.measured_runs(runs_dir(cfg)) if gpu_class is None and free_vram is None else []
    result = est.estimate(cfg, plan, hardware, history)
    click.echo(
        f"steps: {result.steps} ({plan.batches_per_epoch} per epoch × {plan.epochs} epochs), "
        f"{result.sample_images} sample images"
    )
    for line in est.describe(result):
        click.echo(line)
    _print_warnings(est.warnings(result))


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--epochs", metavar="N,N", help="Epochs to render, e.g. 8,10 [default: the last 3 saved].")
@click.option("--weights", metavar="W,W", default="0.7,0.8,1.0", show_default=True, help="LoRA weights to compare.")
@click.option(
    "--prompt",
    "prompts",
    multiple=True,
    metavar="TEXT",
    help="Prompt to render (repeatable) [default: the run's first sample prompt].",
)
@click.option("--steps", type=click.IntRange(1, 1000), help="Sampling steps [default: the sample prompt's].")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), help="Seed for every image [default: the sample prompt's].")
@click.option("--sampler", help="Sampler, e.g. euler_a [default: the run's sampling.sampler].")
@click.option("-v", "--verbose", is_flag=True, help="Show gen_img.py's output live.")
def preview(
    run_dir: Path,
    epochs: str | None,
    weights: str,
    prompts: tuple[str, ...],
    steps: int | None,
    seed: int | None,
    sampler: str | None,
    verbose: bool,
) -> None:
    """Render RUN_DIR's LoRA at chosen epochs × weights with sd-scripts' gen_img.py (report/preview.png)."""
    import typing

    from kohya_wrap.errors import ConfigError
    from kohya_wrap.preview import parse_numbers, run_preview
    from kohya_wrap.settings import Sampler

    if sampler is not None and sampler not in typing.get_args(Sampler):
        raise ConfigError(f"preview: --sampler {sampler} is not one of {', '.join(typing.get_args(Sampler))}")
    chosen = [int(e) for e in parse_numbers(epochs, "epochs", int)] if epochs else None
    png = run_preview(
        run_dir,
        chosen,
        parse_numbers(weights, "weights", float),
        prompts,
        seed,
        steps,
        sampler,
        on_text=(lambda text: click.echo(text, nl=False, err=True)) if verbose else None,
        note=echo_err,
    )
    click.echo(f"preview: {png}")
    click.echo(f"report: {png.parent / 'index.html'}")


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--port", type=click.IntRange(1, 65535), default=6006, show_default=True)
@click.option("--print", "print_only", is_flag=True, help="Print the command instead of starting TensorBoard.")
def tensorboard(run_dirs: tuple[Path, ...], port: int, print_only: bool) -> None:
    """Start TensorBoard on the loss and learning-rate logs of one or more runs, each under its name."""
    import contextlib
    import importlib.util
    import shlex
    import subprocess
    import sys

    from kohya_wrap.layout import RunLayout
    from kohya_wrap.report import tensorboard_argv

    argv = tensorboard_argv([RunLayout(d.resolve()) for d in run_dirs], sys.executable, port)
    if print_only or importlib.util.find_spec("tensorboard") is None:
        if not print_only:
            echo_err("tensorboard is not installed here; `pip install tensorboard`, then run:")
        click.echo(shlex.join(argv))
        return
    echo_err(f"TensorBoard at http://localhost:{port}/ (Ctrl-C stops it)")
    # Ctrl-C reaches TensorBoard and us alike: it is the way to stop, not an error.
    with contextlib.suppress(KeyboardInterrupt):
        subprocess.run(argv, check=False)


@main.command()
def schema() -> None:
    """Print the config's JSON schema."""
    import json

    from kohya_wrap.settings import Config

    click.echo(json.dumps(Config.model_json_schema(), indent=1, ensure_ascii=False))
