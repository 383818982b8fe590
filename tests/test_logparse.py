"""logparse on every sd-scripts log in tests/fixtures/logs, and on the shapes those logs take."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import pytest

from kohya_wrap.train.events import (
    CheckpointSaved,
    EpochFinished,
    EpochStarted,
    Error,
    ErrorKind,
    Event,
    Phase,
    RunFinished,
    RunStarted,
    SampleSaved,
    StateSaved,
    Step,
    Validation,
    Warning,
    to_json,
)
from kohya_wrap.train.logparse import HINTS, LogParser

E = TypeVar("E", bound=Event)
LOGS = Path(__file__).parent / "fixtures" / "logs"
SITE = "/srv/e2e/venv/lib/python3.11/site-packages"
MISSING_MODEL = (
    'ValueError: The provided pretrained_model_name_or_path "/srv/e2e/models/does-not-exist.safetensors"'
    " is neither a valid local path nor a valid repo id. Please check the parameter."
)
# The record is wrapped over 9 lines, the Japanese half cut inside one "word".
NO_DATA = (
    "No data found. Please verify arguments (train_data_dir must be the parent of folders with images) / "
    "画像がありません。引数指定を確認してください（train_data_dirには画像があるフォルダではなく、"
    "画像があるフォルダの親フォルダを指定する必要があります）"
)
CONSTANT_WARMUP = "ValueError: SchedulerType.CONSTANT does not require `num_warmup_steps`. Set None or 0."
KILLED = "subprocess.CalledProcessError: Command '['python', 'train_network.py']' died with <Signals.SIGKILL: 9>."
BAR_1 = "steps:  12%|█▎        | 1/8 [00:01<00:10,  1.48s/it, avr_loss=1.16]"
BAR_2 = "steps:  25%|██▌       | 2/8 [00:02<00:08,  1.34s/it, avr_loss=1.14]"


def read(path: Path) -> str:
    # newline="" keeps the \r and \r\n that the logs are made of.
    with path.open(encoding="utf-8", newline="") as file:
        return file.read()


def merged(name: str) -> str:
    """A log's whole output in one stream: the typescript as it is; piped-apart logs as stdout, then stderr.

    Where they were recorded apart, the real interleaving is lost; putting stdout first gives the
    parser the training plan before the bars, as in a real merged stream.
    """
    if name.endswith(".txt"):
        return read(LOGS / name)
    stdout = read(LOGS / f"{name}.stdout.txt")
    return stdout + ("\n" if stdout and not stdout.endswith("\n") else "") + read(LOGS / f"{name}.stderr.txt")


def parse(text: str, exit_code: int | None, sizes: tuple[int, int] | None = None) -> tuple[list[Event], LogParser]:
    """All events for `text`, fed whole or, with `sizes`, in random chunks of that many characters."""
    parser = LogParser()
    events: list[Event] = []
    if sizes is None:
        events += parser.feed(text)
    else:
        rng = random.Random(len(text))
        start = 0
        while start < len(text):
            end = start + rng.randint(*sizes)
            events += parser.feed(text[start:end])
            start = end
    events += parser.finish(exit_code)
    return events, parser


def of(events: list[Event], cls: type[E]) -> list[E]:
    return [event for event in events if isinstance(event, cls)]


def rounded(events: list[E]) -> list[E]:
    """`events` with Step rates to 4 decimals (an s/it bar gives 1 / its number)."""
    return [
        replace(event, rate=round(event.rate, 4)) if isinstance(event, Step) and event.rate else event
        for event in events
    ]


@dataclass(frozen=True)
class Case:
    """What a fixture's events must be, in order within each kind."""

    name: str
    exit_code: int
    run_started: RunStarted | None
    steps: int  # Step events
    last_step: tuple[int, int] | None
    epochs: list[int]
    finished_epochs: list[int]
    checkpoints: list[CheckpointSaved]
    states: list[StateSaved]
    samples: list[SampleSaved]
    phases: list[Phase]
    run_finished: RunFinished
    errors: list[Error] = field(default_factory=list)
    warnings: list[Warning] = field(default_factory=list)
    validations: list[Validation] = field(default_factory=list)


def plan(total: int, epochs: int) -> RunStarted:
    return RunStarted(script=None, total_steps=total, epochs=epochs, batches_per_epoch=4, images=4)


def samples(*steps_and_epochs: tuple[int, int], prompts: int = 2) -> list[SampleSaved]:
    return [
        SampleSaved(path=None, epoch=epoch, step=step, index=index)
        for step, epoch in steps_and_epochs
        for index in range(prompts)
    ]


def trained(out: str, name: str, epochs: int) -> tuple[list[CheckpointSaved], list[StateSaved]]:
    """Checkpoints and states of a run that finished `epochs` epochs of 4 steps, saving every epoch."""
    checkpoints = [
        CheckpointSaved(path=f"{out}/{name}-{epoch:06d}.safetensors", epoch=epoch, step=4 * epoch, final=False)
        for epoch in range(1, epochs)
    ]
    checkpoints.append(CheckpointSaved(path=f"{out}/{name}.safetensors", epoch=epochs, step=4 * epochs, final=True))
    states = [
        StateSaved(path=f"{out}/{name}-{epoch:06d}-state", epoch=epoch, step=4 * epoch) for epoch in range(1, epochs)
    ]
    states.append(StateSaved(path=f"{out}/{name}-state", epoch=epochs, step=4 * epochs))
    return checkpoints, states


NETWORK = Phase(name="preparing_network", detail="networks.lora")
SD15 = Phase(name="loading_model", detail="/srv/e2e/models/sd15-random")
CACHING = Phase(name="caching_latents", detail="")
COMPLETED = RunFinished(exit_code=0, success=True, reason="completed")


def sampling(*steps: int) -> list[Phase]:
    return [Phase(name="sampling", detail=f"step {step}") for step in steps]


def validating(epoch: int) -> Phase:
    return Phase(name="validating", detail=f"epoch {epoch}")


def two_epochs(name: str, out: str, lora: str, phases: list[Phase], steps: int = 16) -> Case:
    """A successful fixture run: 2 epochs of 4 steps, saving and sampling (2 prompts) every epoch."""
    steps_seen = (8, 8) if steps else None
    return Case(
        name,
        0,
        plan(8, 2),
        steps,
        steps_seen,
        [1, 2],
        [1, 2],
        *trained(out, lora, 2),
        samples((4, 1), (8, 2)),
        phases,
        COMPLETED,
    )


SUCCESSES = [
    two_epochs("sd15_accelerate_notty", "/srv/e2e/out/sd15", "e2e_lora", [NETWORK, SD15, CACHING, *sampling(4, 8)]),
    # tqdm drew nothing into the typescript, so there are no steps to see.
    two_epochs(
        "sd15_accelerate_tty.typescript.txt",
        "/srv/e2e/out/sd15",
        "e2e_lora",
        [SD15, CACHING, NETWORK, *sampling(4, 8)],
        steps=0,
    ),
    two_epochs(
        "sd15_accelerate_console_log_simple",
        "/srv/e2e/out/sd15simple",
        "e2e_lora",
        [SD15, CACHING, NETWORK, *sampling(4, 8)],
    ),
    # No hashing_model phase: stdout (the plan) comes before stderr (the model path) here.
    two_epochs(
        "sd15_singlefile_accelerate_notty",
        "/srv/e2e/out/sd15single",
        "e2e_lora",
        [
            NETWORK,
            Phase(name="loading_model", detail="/srv/e2e/models/sd15-random-single.safetensors"),
            CACHING,
            *sampling(4, 8),
        ],
    ),
    two_epochs(
        "sdxl_accelerate_notty",
        "/srv/e2e/out/sdxl",
        "e2e_sdxl_lora",
        [
            NETWORK,
            Phase(name="loading_model", detail="/srv/e2e/models/sdxl-random"),
            CACHING,
            *sampling(4, 8),
        ],
    ),
    # 6 images, validation_split 0.34: 4 train, 2 are held out and validated at the end of each epoch.
    Case(
        "sd15_validation_split.merged.txt",
        0,
        plan(8, 2),
        16,
        (8, 8),
        [1, 2],
        [1, 2],
        *trained("/srv/e2e/runs/e2e_lora-20261129-180957/output", "e2e_lora", 2),
        samples((4, 1), (8, 2), prompts=1),
        [SD15, CACHING, NETWORK, validating(1), *sampling(4), validating(2), *sampling(8)],
        COMPLETED,
        validations=[Validation(epoch=1, step=4, loss=1.05), Validation(epoch=2, step=8, loss=1.05)],
    ),
]

NAN_CHECKPOINTS, NAN_STATES = trained("/srv/e2e/fail/out_nan", "e2e_lora", 3)
FAILURES = [
    Case(
        "failures/missing_model",
        1,
        None,
        0,
        None,
        [],
        [],
        [],
        [],
        [],
        [Phase(name="loading_model", detail="/srv/e2e/models/does-not-exist.safetensors")],
        RunFinished(exit_code=1, success=False, reason="missing_file"),
        errors=[
            Error(
                kind="missing_file",
                message=MISSING_MODEL,
                hint=HINTS["missing_file"],
            )
        ],
    ),
    Case(
        "failures/no_data",
        0,
        None,
        0,
        None,
        [],
        [],
        [],
        [],
        [],
        [],
        RunFinished(exit_code=0, success=False, reason="no_data"),
        errors=[
            Error(
                kind="no_data",
                message=NO_DATA,
                hint=HINTS["no_data"],
            )
        ],
        warnings=[
            Warning(
                message="ignore subset with image_dir='/srv/e2e/fail/emptyimg': no images found"
                " / 画像が見つからないためサブセットを無視します"
            )
        ],
    ),
    Case(
        "failures/constant_warmup",
        1,
        None,
        0,
        None,
        [],
        [],
        [],
        [],
        [],
        [NETWORK, SD15, CACHING],
        RunFinished(exit_code=1, success=False, reason="config"),
        errors=[
            Error(
                kind="config",
                message=CONSTANT_WARMUP,
                hint="This scheduler takes no warmup: set optimizer.warmup_percent = 0"
                ' or use optimizer.scheduler = "constant_with_warmup".',
            )
        ],
    ),
    Case(
        "failures/dadapt_missing",
        1,
        None,
        0,
        None,
        [],
        [],
        [],
        [],
        [],
        [NETWORK, SD15, CACHING],
        RunFinished(exit_code=1, success=False, reason="import"),
        errors=[
            Error(
                kind="import",
                message="ImportError: No dadaptation / dadaptation がインストールされていないようです",
                hint="Run `python -m pip install dadaptation` with the Python that runs sd-scripts.",
            )
        ],
    ),
    Case(
        # Training went on to the end and exited 0: the NaN makes it a failure all the same.
        "failures/nan_loss",
        0,
        plan(12, 3),
        14,
        (12, 12),
        [1, 2, 3],
        [1, 2, 3],
        NAN_CHECKPOINTS,
        NAN_STATES,
        samples((4, 1), (8, 2), (12, 3)),
        [NETWORK, SD15, CACHING, *sampling(4, 8, 12)],
        RunFinished(exit_code=0, success=False, reason="nan"),
        errors=[Error(kind="nan", message="The average loss became NaN at step 2/12.", hint=HINTS["nan"])],
    ),
    Case(
        # Interrupted while drawing epoch 1's second sample: the first one was written, the second not.
        "failures/interrupted",
        -2,
        plan(16, 4),
        8,
        (4, 16),
        [1],
        [],
        [CheckpointSaved(path="/srv/e2e/fail/out_int/e2e_lora-000001.safetensors", epoch=1, step=4, final=False)],
        [StateSaved(path="/srv/e2e/fail/out_int/e2e_lora-000001-state", epoch=1, step=4)],
        samples((4, 1), prompts=1),
        [NETWORK, SD15, CACHING, *sampling(4)],
        RunFinished(exit_code=-2, success=False, reason="interrupted"),
    ),
    Case(
        "failures/oom_handmade",
        1,
        plan(8, 2),
        2,
        (1, 8),
        [1],
        [],
        [],
        [],
        [],
        [NETWORK, SD15, CACHING],
        RunFinished(exit_code=1, success=False, reason="oom"),
        errors=[
            Error(
                kind="oom",
                message="torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a"
                " total capacity of 23.55 GiB of which 1.38 GiB is free. Including non-PyTorch memory, this"
                " process has 22.16 GiB memory in use. Of the allocated memory 20.91 GiB is allocated by"
                " PyTorch, and 848.33 MiB is reserved by PyTorch but unallocated. If reserved but unallocated"
                " memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid"
                " fragmentation.  See documentation for Memory Management "
                " (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)",
                hint=HINTS["oom"],
            )
        ],
    ),
]
CASES = SUCCESSES + FAILURES


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_fixture_events(case: Case) -> None:
    events, parser = parse(merged(case.name), case.exit_code)
    assert of(events, RunStarted) == ([case.run_started] if case.run_started else [])
    steps = of(events, Step)
    assert len(steps) == case.steps
    assert ((steps[-1].step, steps[-1].total) if steps else None) == case.last_step
    if case.run_started is not None and case.run_finished.reason in ("completed", "nan"):
        assert steps == [] or steps[-1].step == case.run_started.total_steps
    assert [event.epoch for event in of(events, EpochStarted)] == case.epochs
    assert [event.epoch for event in of(events, EpochFinished)] == case.finished_epochs
    assert of(events, CheckpointSaved) == case.checkpoints
    assert of(events, StateSaved) == case.states
    assert of(events, SampleSaved) == case.samples
    assert of(events, Phase) == case.phases
    assert of(events, Error) == case.errors
    assert of(events, Warning) == case.warnings
    assert of(events, Validation) == case.validations
    assert events[-1] == case.run_finished
    assert of(events, RunFinished) == [case.run_finished]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_random_chunks_give_the_same_events(case: Case) -> None:
    text = merged(case.name)
    whole, whole_parser = parse(text, case.exit_code)
    chunked, chunked_parser = parse(text, case.exit_code, sizes=(1, 97))
    # Compared as JSON: a NaN loss is not equal to itself.
    assert [to_json(event) for event in chunked] == [to_json(event) for event in whole]
    assert chunked_parser.last_relevant_lines() == whole_parser.last_relevant_lines()


def test_piped_apart_streams_can_be_fed_one_after_the_other() -> None:
    parser = LogParser()
    stdout = read(LOGS / "sd15_accelerate_notty.stdout.txt")
    events = parser.feed(stdout) + parser.feed("\n") + parser.feed(read(LOGS / "sd15_accelerate_notty.stderr.txt"))
    events += parser.finish(0)
    assert [to_json(event) for event in events] == [
        to_json(event) for event in parse(merged("sd15_accelerate_notty"), 0)[0]
    ]


def test_steps_carry_the_bar_numbers() -> None:
    steps = of(parse(merged("sd15_accelerate_notty"), 0)[0], Step)
    assert rounded(steps[:2]) == [
        Step(step=1, total=8, loss=None, rate=0.6757, eta_s=10.0, elapsed_s=1.0),
        Step(step=1, total=8, loss=1.16, rate=0.6757, eta_s=10.0, elapsed_s=1.0),
    ]
    # Each step number's last Step has that step's loss (the first redraw still shows the previous one).
    last_losses = {step.step: step.loss for step in steps}
    assert last_losses == {1: 1.16, 2: 1.14, 3: 1.15, 4: 1.16, 5: 1.19, 6: 1.18, 7: 1.2, 8: 1.19}


def test_nan_loss_is_reported_once() -> None:
    events = parse(merged("failures/nan_loss"), 0)[0]
    steps = of(events, Step)
    assert [step.loss for step in steps[:3]] == [None, 1.16, 1.16]
    assert all(step.loss is not None and math.isnan(step.loss) for step in steps[3:])
    nan_at = next(i for i, event in enumerate(events) if isinstance(event, Error))
    assert events[nan_at - 1] is steps[3]


def test_identical_redraws_are_not_repeated() -> None:
    parser = LogParser()
    # The same step and loss at another rate (tqdm's closing redraw) is not news either.
    redraws = [BAR_1, BAR_1, BAR_1.replace("1.48s/it", "1.50s/it"), BAR_2, BAR_2]
    events = parser.feed("".join(f"\r{bar}" for bar in redraws) + "\n")
    assert [(e.step, e.loss) for e in of(events, Step)] == [(1, 1.16), (2, 1.14)]
    assert len(events) == 2


def test_carriage_returns_split_lines() -> None:
    parser = LogParser()
    events = parser.feed(f"\r{BAR_1}\r{BAR_2}\repoch 2/2\rsaving checkpoint: /out/x-000002.safetensors\r\n")
    assert rounded(events) == [
        Step(step=1, total=8, loss=1.16, rate=0.6757, eta_s=10.0, elapsed_s=1.0),
        Step(step=2, total=8, loss=1.14, rate=0.7463, eta_s=8.0, elapsed_s=2.0),
        EpochStarted(epoch=2, total=2),
        CheckpointSaved(path="/out/x-000002.safetensors", epoch=2, step=None, final=False),
    ]


def test_a_bar_is_reported_before_its_line_ends() -> None:
    # tqdm starts each redraw with \r and ends it with nothing: waiting for the line break would
    # report every step one step late.
    parser = LogParser()
    assert [e.step for e in of(parser.feed(f"\r{BAR_1}"), Step)] == [1]
    assert parser.feed("\r") == []
    assert [e.step for e in of(parser.feed(BAR_2), Step)] == [2]
    assert of(parser.feed("\n"), Step) == []


@pytest.mark.parametrize(
    ("bar", "rate", "eta_s", "elapsed_s"),
    [
        ("steps:  50%|█████     | 4/8 [00:03<00:03,  1.02it/s, avr_loss=1.15]", 1.02, 3.0, 3.0),
        ("steps:  50%|█████     | 4/8 [1:02:03<?, ?it/s]", None, None, 3723.0),
        ("steps:  50%|█████     | 4/8 [00:04<00:04,  1.17s/it]", 0.8547, 4.0, 4.0),
    ],
)
def test_rate_is_in_iterations_per_second(bar: str, rate: float | None, eta_s: float | None, elapsed_s: float) -> None:
    (step,) = rounded(of(LogParser().feed(f"\r{bar}\n"), Step))
    assert (step.rate, step.eta_s, step.elapsed_s) == (rate, eta_s, elapsed_s)


def test_other_bars_are_not_steps() -> None:
    parser = LogParser()
    text = (
        "\r 50%|█████     | 2/4 [00:00<00:00,  3.93it/s]"
        "\rLoading pipeline components...:  25%|██▌       | 1/4 [00:04<00:14,  4.80s/it]"
        "\rvalidation steps:  50%|█████     | 1/2 [00:01<00:01,  1.00s/it]"
        "\rread caption: 0it [00:00, ?it/s]\n"
    )
    assert parser.feed(text) == []
    assert parser.last_relevant_lines() == []


def validation_bar(n: int, total: int, loss: str | None) -> str:
    """A redraw of sd-scripts' epoch validation bar, with the mean so far when one is set."""
    postfix = "" if loss is None else f", val_epoch_avg_loss={loss}, timestep=800"
    bar = f"{'#' * n:<{total}}"
    return f"epoch validation steps: {100 * n // total:3d}%|{bar}| {n}/{total} [00:0{n}<00:01,  1.50it/s{postfix}]"


def validation_pass(*losses: str) -> str:
    """Redraws of a whole validation pass as tqdm makes them: after each update, then after the new mean."""
    total = len(losses)
    redraws = [validation_bar(0, total, None)]
    previous: str | None = None
    for n, loss in enumerate(losses, start=1):
        redraws += [validation_bar(n, total, previous), validation_bar(n, total, loss)]
        previous = loss
    return "".join(f"\r{redraw}" for redraw in redraws)


def test_the_validation_mean_is_the_last_redraw_of_the_pass() -> None:
    parser = LogParser()
    passed = validation_pass("0.978", "0.996", "1.04", "1.07")
    events = parser.feed(f"epoch 1/2\n\r{BAR_1}{passed}\nsaving checkpoint: /o/x-000001.safetensors\n")
    kinds = ["EpochStarted", "Step", "Phase", "Validation", "CheckpointSaved"]
    assert [type(event).__name__ for event in events] == kinds
    assert events[2] == Phase(name="validating", detail="epoch 1")
    assert events[3] == Validation(epoch=1, step=1, loss=1.07)


def test_a_closed_validation_bar_drawn_again_is_no_new_pass() -> None:
    # sd-scripts leaves each validation bar open; tqdm draws it once more, full, when it is replaced by
    # the next epoch's bar (right after that one's first redraw) and when training ends.
    first = validation_pass("1.2", "1.1")
    closed = f"\r{validation_bar(2, 2, '1.1')}"
    parser = LogParser()
    started = f"\r{validation_bar(0, 2, None)}"
    events = parser.feed(f"epoch 1/2\n\r{BAR_1}{first}\nepoch 2/2\n\r{BAR_2}{started}{closed}")
    assert of(events, Validation) == [Validation(epoch=1, step=1, loss=1.1)]
    # Killed before epoch 2's pass got anywhere: only the redrawn epoch-1 bar was seen in epoch 2.
    assert of(parser.finish(-2), Validation) == []

    parser = LogParser()
    second = validation_pass("1.0", "0.9")
    text = f"epoch 1/1\n\r{BAR_2}{second}\nsaving checkpoint: /o/x.safetensors\nmodel saved.\n{closed}\n"
    assert of(parser.feed(text) + parser.finish(0), Validation) == [Validation(epoch=1, step=2, loss=0.9)]


def test_an_unfinished_validation_pass_is_not_reported() -> None:
    parser = LogParser()
    text = f"epoch 1/2\n\r{BAR_1}\r{validation_bar(0, 4, None)}\r{validation_bar(1, 4, '1.3')}"
    assert of(parser.feed(text) + parser.finish(-2), Validation) == []


def test_a_nan_validation_mean_is_reported_as_nan_without_an_error() -> None:
    parser = LogParser()
    text = f"epoch 1/1\n\r{BAR_1}{validation_pass('nan', 'nan')}\nsaving checkpoint: /o/x.safetensors\nmodel saved.\n"
    events = parser.feed(text) + parser.finish(0)
    (validation,) = of(events, Validation)
    assert (validation.epoch, validation.step, math.isnan(validation.loss)) == (1, 1, True)
    assert of(events, Error) == []
    assert events[-1] == COMPLETED


def test_a_wrapped_record_comes_out_whole() -> None:
    # rich cut the path inside a word (the piece fills the column: one space, then the blank path
    # column) and wrapped between words elsewhere.
    record = (
        "                    INFO     save train state to            train_network.py:946\n"
        "                             /srv/e2e/out/sd15/e2e_lora-000                     \n"
        "                             001-state/train_state.json at                      \n"
        "                             epoch 1 step 4                                     \n"
        "                    INFO     Model weights saved in         checkpointing.py:108\n"
    )
    parser = LogParser()
    assert parser.feed(record) == []
    assert parser.finish(None)[0] == StateSaved(path="/srv/e2e/out/sd15/e2e_lora-000001-state", epoch=1, step=4)
    assert parser.last_relevant_lines(2) == [
        "save train state to /srv/e2e/out/sd15/e2e_lora-000001-state/train_state.json at epoch 1 step 4",
        "Model weights saved in",
    ]


def test_idle_completes_the_last_record() -> None:
    # A record may go on in the next line, so it ends only when something else starts, or when the
    # caller says the child has gone quiet.
    parser = LogParser()
    assert parser.feed("                    INFO     caching latents...               train_util.py:1170\n") == []
    assert parser.idle() == [Phase(name="caching_latents", detail="")]
    assert parser.idle() == []


def test_the_base_model_file_is_hashed_after_the_plan() -> None:
    # The order of a merged stream: the model is loaded (stderr) before the plan is printed (stdout).
    stderr = read(LOGS / "sd15_singlefile_accelerate_notty.stderr.txt")
    stdout = read(LOGS / "sd15_singlefile_accelerate_notty.stdout.txt")
    parser = LogParser(script="train_network.py")
    parser.feed(stderr[: stderr.index("\rsteps:")])
    events = parser.feed(stdout[: stdout.index("\nepoch 1/2")] + "\n")
    assert events[-2:] == [
        RunStarted(script="train_network.py", total_steps=8, epochs=2, batches_per_epoch=4, images=4),
        Phase(name="hashing_model", detail="/srv/e2e/models/sd15-random-single.safetensors"),
    ]


@pytest.mark.parametrize(
    ("name", "last_lines"),
    [
        (
            "failures/missing_model",
            [
                "load Diffusers pretrained models: /srv/e2e/models/does-not-exist.safetensors",
                f'  File "{SITE}/diffusers/pipelines/pipeline_utils.py", line 728, in from_pretrained',
                "    raise ValueError(",
                MISSING_MODEL,
            ],
        ),
        (
            "failures/dadapt_missing",
            [
                '  File "/srv/e2e/sd-scripts/library/train_util.py", line 5004, in get_optimizer',
                "    import dadaptation",
                "ModuleNotFoundError: No module named 'dadaptation'",
                '  File "/srv/e2e/sd-scripts/library/train_util.py", line 5007, in get_optimizer',
                '    raise ImportError("No dadaptation / dadaptation がインストールされていないようです")',
                "ImportError: No dadaptation / dadaptation がインストールされていないようです",
            ],
        ),
        (
            "failures/constant_warmup",
            [
                "use AdamW optimizer | {}",
                '  File "/srv/e2e/sd-scripts/library/train_util.py", line 5296,'
                " in wrap_check_needless_num_warmup_steps",
                '    raise ValueError(f"{name} does not require `num_warmup_steps`. Set None or 0.")',
                CONSTANT_WARMUP,
            ],
        ),
        (
            "failures/interrupted",
            [
                "seed: 2",
                f'  File "{SITE}/torch/nn/modules/conv.py", line 560, in _conv_forward',
                "    return F.conv2d(",
                "KeyboardInterrupt",
            ],
        ),
        (
            "failures/no_data",
            [
                "prepare dataset",
                NO_DATA,
            ],
        ),
    ],
)
def test_last_relevant_lines_end_with_the_childs_error(name: str, last_lines: list[str]) -> None:
    parser = parse(merged(name), None)[1]
    lines = parser.last_relevant_lines()
    assert len(lines) == 15
    assert lines[-len(last_lines) :] == last_lines
    # accelerate's own traceback says nothing about the cause.
    assert not any("CalledProcessError" in line or "accelerate/commands" in line for line in lines)
    assert parser.last_relevant_lines(2) == lines[-2:]


def traceback(*exception: str) -> str:
    return "".join(
        [
            "Traceback (most recent call last):\n",
            '  File "/srv/e2e/sd-scripts/train_network.py", line 1913, in <module>\n',
            "    trainer.train(args)\n",
            *(line + "\n" for line in exception),
        ]
    )


LAUNCHER_FAILURE = (
    "Traceback (most recent call last):\n"
    f'  File "{SITE}/accelerate/commands/launch.py", line 795, in simple_launcher\n'
    "    raise subprocess.CalledProcessError(returncode=process.returncode, cmd=cmd)\n"
    f"{KILLED}\n"
)


@pytest.mark.parametrize(
    ("exception", "kind", "hint"),
    [
        (
            "ModuleNotFoundError: No module named 'bitsandbytes'",
            "import",
            "Run `python -m pip install bitsandbytes` with the Python that runs sd-scripts.",
        ),
        (
            "ImportError: No lion_pytorch / lion_pytorch がインストールされていないようです",
            "import",
            "Run `python -m pip install lion-pytorch` with the Python that runs sd-scripts.",
        ),
        (
            "ImportError: No Prodigy / Prodigy がインストールされていないようです",
            "import",
            "Run `python -m pip install prodigyopt` with the Python that runs sd-scripts.",
        ),
        ("ImportError: cannot import name 'x' from 'y'", "import", HINTS["import"]),
        (
            "FileNotFoundError: [Errno 2] No such file or directory: '/data/a.toml'",
            "missing_file",
            HINTS["missing_file"],
        ),
        (
            "voluptuous.error.MultipleInvalid: extra keys not allowed @ data['datasets'][0]['foo']",
            "config",
            HINTS["config"],
        ),
        (
            "AssertionError: network for Text Encoder cannot be trained with caching Text Encoder outputs"
            " / Text Encoderの出力をキャッシュしながらText Encoderのネットワークを学習することはできません",
            "config",
            HINTS["config"],
        ),
        ("RuntimeError: CUDA error: out of memory", "oom", HINTS["oom"]),
        ("AssertionError", "unknown", HINTS["unknown"]),
    ],
)
def test_exceptions_are_classified(exception: str, kind: ErrorKind, hint: str) -> None:
    parser = LogParser()
    events = parser.feed(traceback(exception)) + parser.finish(1)
    assert events == [
        Error(kind=kind, message=exception, hint=hint),
        RunFinished(exit_code=1, success=False, reason=kind),
    ]


def test_an_error_message_may_span_lines() -> None:
    parser = LogParser()
    events = parser.feed(traceback("ValueError: first line", "second line") + "\n" + LAUNCHER_FAILURE)
    assert events == [Error(kind="unknown", message="ValueError: first line\nsecond line", hint=HINTS["unknown"])]


def test_a_chained_cause_decides_the_kind() -> None:
    text = (
        traceback("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB.")
        + "\nThe above exception was the direct cause of the following exception:\n\n"
        + traceback("RuntimeError: sampling failed")
    )
    parser = LogParser()
    assert parser.feed(text) + parser.finish(1) == [
        Error(kind="oom", message="RuntimeError: sampling failed", hint=HINTS["oom"]),
        RunFinished(exit_code=1, success=False, reason="oom"),
    ]


def test_a_failure_without_a_traceback_is_unknown() -> None:
    parser = LogParser()
    assert parser.feed(LAUNCHER_FAILURE) == []
    assert parser.finish(1) == [
        Error(
            kind="unknown",
            message=KILLED,
            hint=HINTS["unknown"],
        ),
        RunFinished(exit_code=1, success=False, reason="unknown"),
    ]


def test_exit_0_without_the_final_model_is_a_failure() -> None:
    parser = LogParser()
    parser.feed("running training / 学習開始\n")
    assert parser.finish(0) == [
        Error(kind="unknown", message="sd-scripts ended without saving the final model", hint=HINTS["unknown"]),
        RunFinished(exit_code=0, success=False, reason="unknown"),
    ]


@pytest.mark.parametrize("exit_code", [-2, 130, -15, 143])
def test_signal_exit_codes_mean_interrupted(exit_code: int) -> None:
    assert LogParser().finish(exit_code) == [RunFinished(exit_code=exit_code, success=False, reason="interrupted")]


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("train_network.py: error: unrecognized arguments: --foo", "config"),
        ("/srv/e2e/cfg/missing.toml not found.", "missing_file"),
    ],
)
def test_errors_before_training(line: str, kind: ErrorKind) -> None:
    events = LogParser().feed(line + "\n")
    assert events == [Error(kind=kind, message=line, hint=HINTS[kind])]


def test_warnings_are_selective_and_shown_once() -> None:
    record = "                    WARNING  {:<32} train_util.py:2090\n"
    # With COLUMNS=400, as the runner sets it, the message column is just wider.
    wide = "2026-11-24 22:14:30 WARNING  {:<351} train_util.py:2090\n"
    parser = LogParser()
    events = parser.feed(
        record.format("no regularization images /")
        + "                             正則化画像が見つかりませんでした                   \n"
        + record.format("NaN found in latents")
        + wide.format("NaN found in latents")
        + wide.format("not directory: /data/img")
        + "                    INFO     prepare dataset                  train_util.py:1017\n"
    )
    assert events == [Warning(message="NaN found in latents"), Warning(message="not directory: /data/img")]


def test_files_written_when_a_crash_comes_are_not_reported() -> None:
    sampling = (
        "generating sample images at step / サンプル画像生成 ステップ: 0\nprompt: a red square\nprompt: a blue square\n"
    )
    parser = LogParser()
    events = parser.feed(sampling) + parser.feed(traceback("KeyboardInterrupt")) + parser.finish(None)
    assert of(events, SampleSaved) == [SampleSaved(path=None, epoch=None, step=0, index=0)]
    assert events[-1] == RunFinished(exit_code=None, success=False, reason="interrupted")


def test_an_error_before_an_interrupt_is_the_reason() -> None:
    # The runner stops the child on a NaN loss; the NaN, not the stop, is why the run failed.
    parser = LogParser()
    parser.feed(f"\r{BAR_1.replace('avr_loss=1.16', 'avr_loss=nan')}\n")
    assert parser.finish(-2)[-1] == RunFinished(exit_code=-2, success=False, reason="nan")


def test_mixed_precision_on_a_cpu_is_explained_with_the_fix() -> None:
    # What sd-scripts' SD1.5 text encoder raises in layer_norm with bf16 on a CPU (torch 2.x).
    exception = "RuntimeError: mixed dtype (CPU): expect parameter to have scalar type of Float"
    parser = LogParser()
    assert parser.feed(traceback(exception)) + parser.finish(1) == [
        Error(
            kind="config",
            message=exception,
            hint='Mixed precision does not run on a CPU: set training.mixed_precision = "no" (full precision), '
            "or train on a CUDA GPU.",
        ),
        RunFinished(exit_code=1, success=False, reason="config"),
    ]
