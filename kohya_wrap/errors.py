"""Errors a user can act on: one line each, with the exit code the CLI maps them to."""

from __future__ import annotations

EXIT_OK = 0
EXIT_TRAINING_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class KohyaWrapError(Exception):
    """Base error: `lines` are printed one per line, then the process exits with `exit_code`."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, *lines: str) -> None:
        super().__init__("\n".join(lines))
        self.lines: tuple[str, ...] = lines


class ConfigError(KohyaWrapError):
    """The config (preset, file or --set override) is invalid; lines read `section.key: message`."""


class DatasetError(KohyaWrapError):
    """A dataset folder, image or caption is missing or unusable."""


class SdScriptsError(KohyaWrapError):
    """The sd-scripts checkout or its interpreter cannot run the training."""


class RunError(KohyaWrapError):
    """A run folder is missing, unreadable or cannot be resumed."""


class TrainingFailed(KohyaWrapError):
    """sd-scripts ran and failed."""

    exit_code = EXIT_TRAINING_FAILED


class TrainingInterrupted(KohyaWrapError):
    """The user stopped the run."""

    exit_code = EXIT_INTERRUPTED
