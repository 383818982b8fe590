"""`python -m kohya_wrap` runs the command line."""

from kohya_wrap.cli import main

main(prog_name="kohya-wrap")
