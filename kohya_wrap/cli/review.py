"""Review commands: outputs, report, estimate, preview, tensorboard."""

from __future__ import annotations

from pathlib import Path

import click

from kohya_wrap.cli.common import (
    CONFIG_ARG,
    PRESET_OPTION,
    SET_OPTION,
    _load,
    _print_warnings,
    echo_err,
    main,
)
from kohya_wrap.review.gpu_classes import GPU_CLASSES


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--metadata", is_flag=True, help="Also print each LoRA's ss_* metadata.")
@click.option("--best", is_flag=True, help="Print only the LoRA file of the epoch with the lowest validation loss.")
@click.option("--check", is_flag=True, help="Check that each LoRA loads in ComfyUI and diffusers (exit 1 if not).")
def outputs(run_dir: Path, metadata: bool, best: bool, check: bool) -> None:
    """List a run's LoRA per epoch with its size, validation loss and sample images."""
    from kohya_wrap.commands import outputs as command

    if check:
        from kohya_wrap.cli.interop import print_lora_checks

        print_lora_checks(run_dir)
        return

    if best:
        chosen = command.best(run_dir)
        click.echo(str(chosen.lora))
        echo_err(f"{chosen.reason}; the samples have the last word")
        return
    result = command.outputs(run_dir, metadata)
    layout = result.layout
    if not result.loras:
        click.echo(f"no LoRA files yet in {layout.output_dir} (run status: {result.record.status})")
    for out in result.loras:
        lora = out.file
        label = f"epoch {lora.epoch}" if lora.epoch is not None else f"step {lora.step}"
        loss = ""
        if result.validated:
            loss = f"  val {'—':<6}" if out.validation_loss is None else f"  val {out.validation_loss:<6.3g}"
        suggested = result.best is not None and lora.path == result.best.lora
        click.echo(
            f"{label:10} {lora.size / 2**20:8.1f} MiB{loss}  {lora.path.relative_to(layout.root)}"
            + ("  (final)" if lora.final else "")
            + ("  (suggested)" if suggested else "")
        )
        for sample in lora.samples:
            click.echo(f"{'':10} sample    {sample.relative_to(layout.root)}")
        if out.metadata_error is not None:
            click.echo(f"{'':10} {out.metadata_error}")
        meta = out.metadata or {}
        for key in sorted(meta):
            click.echo(f"{'':10} {key} = {meta[key][:200]}")
    if result.best is not None:
        click.echo(f"suggested: epoch {result.best.epoch} ({result.best.reason}); the samples have the last word")


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
def report(run_dir: Path) -> None:
    """Write RUN_DIR's report: sample grid, loss curve, LoRA files, timings (unfinished runs too)."""
    from kohya_wrap.commands import review

    click.echo(f"report: {review.report(run_dir)}")


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
    from kohya_wrap.commands import review
    from kohya_wrap.review.estimate import describe, warnings

    result = review.estimate(_load(config, overrides, preset), gpu_class, free_vram, probe)
    if result.hardware is None:
        echo_err("note: no GPU found (nvidia-smi); give --gpu CLASS or --free-vram GB to check a GPU's memory")
    est, plan = result.estimate, result.plan
    click.echo(
        f"steps: {est.steps} ({plan.batches_per_epoch} per epoch × {plan.epochs} epochs), "
        f"{est.sample_images} sample images"
    )
    for line in describe(est):
        click.echo(line)
    _print_warnings(warnings(est))


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
    from kohya_wrap.commands import review
    from kohya_wrap.review.preview import PreviewOptions, parse_numbers

    options = PreviewOptions(
        [int(e) for e in parse_numbers(epochs, "epochs", int)] if epochs else None,
        parse_numbers(weights, "weights", float),
        prompts,
        seed,
        steps,
        sampler,
    )
    png = review.preview(
        run_dir,
        options,
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
    import shlex
    import subprocess

    from kohya_wrap.commands import review

    board = review.tensorboard(run_dirs, port)
    argv = board.argv
    if print_only or not board.installed:
        if not print_only:
            echo_err("tensorboard is not installed here; `pip install tensorboard`, then run:")
        click.echo(shlex.join(argv))
        return
    echo_err(f"TensorBoard at http://localhost:{port}/ (Ctrl-C stops it)")
    # Ctrl-C reaches TensorBoard and us alike: it is the way to stop, not an error.
    with contextlib.suppress(KeyboardInterrupt):
        subprocess.run(argv, check=False)
