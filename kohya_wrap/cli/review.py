"""Review commands: outputs, report, estimate, preview, tensorboard."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from kohya_wrap.cli.common import (
    CONFIG_ARG,
    PRESET_OPTION,
    SET_OPTION,
    _load,
    _print_warnings,
    _scan,
    echo_err,
    main,
)

if TYPE_CHECKING:
    pass


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--metadata", is_flag=True, help="Also print each LoRA's ss_* metadata.")
def outputs(run_dir: Path, metadata: bool) -> None:
    """List a run's LoRA per epoch with its size and sample images."""
    from kohya_wrap.review.outputs import MetadataError, collect, read_metadata
    from kohya_wrap.train.layout import RunLayout
    from kohya_wrap.train.runs import read_record

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
@click.argument("run_dir", type=click.Path(path_type=Path))
def report(run_dir: Path) -> None:
    """Write RUN_DIR's report: sample grid, loss curve, LoRA files, timings (unfinished runs too)."""
    from kohya_wrap.review.report import write_report
    from kohya_wrap.train.layout import RunLayout
    from kohya_wrap.train.runs import read_record

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

    from kohya_wrap.review import estimate as est
    from kohya_wrap.train.runs import runs_dir

    loaded = _load(config, overrides, preset)
    _, plan = _scan(loaded)
    cfg = loaded.config
    hardware: est.Hardware | None
    if gpu_class is not None or free_vram is not None:
        hardware = est.assumed_hardware(gpu_class, free_vram)
    elif probe:
        from kohya_wrap.train.doctor import probe as probe_interpreter
        from kohya_wrap.train.launch import sd_scripts_dir

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

    from kohya_wrap.config.models import Sampler
    from kohya_wrap.errors import ConfigError
    from kohya_wrap.review.preview import parse_numbers, run_preview

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

    from kohya_wrap.review.report import tensorboard_argv
    from kohya_wrap.train.layout import RunLayout

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
