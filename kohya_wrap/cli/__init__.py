"""The `kohya-wrap` command line: parse, call the core, print, map errors to exit codes.

Each stage's commands live in their own module and register on `main` when imported here.
"""

from kohya_wrap.cli import compare, data, interop, queue, review, run, ui  # noqa: F401  (registers the commands)
from kohya_wrap.cli.common import main

__all__ = ["main"]
