"""Dump every option of sd-scripts' LoRA training parsers to the arg spec JSON (or check it)."""

from __future__ import annotations

import argparse
import difflib
import importlib
import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SCRIPTS = ("train_network.py", "sdxl_train_network.py", "flux_train_network.py")
# Hidden mode: this same file, run by the sd-scripts interpreter, collects the options. Running it
# in a child keeps sd-scripts' imports (torch, its Rich log handler, its prints) out of our process
# and lets the spec come from whatever interpreter the user trains with.
COLLECT_FLAG = "--collect-into"


def json_safe(value: object) -> Any:
    """Turn an argparse default or choice into a value JSON can hold losslessly and stably."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, list | tuple | range):
        return [json_safe(v) for v in value]
    # Path and other objects: their text is what a TOML value would hold.
    return str(value)


def describe_action(action: argparse.Action, kinds: dict[type, str]) -> dict[str, Any]:
    """One option's record: what a TOML value for it must look like."""
    kind = kinds.get(type(action), type(action).__name__)
    if action.type is not None:
        type_name = getattr(action.type, "__name__", repr(action.type))
    elif kind in ("store_true", "store_false"):
        type_name = "bool"
    elif kind == "count":
        type_name = "int"
    elif action.nargs == 0:
        # store_const / append_const: the value stored is the constant itself.
        type_name = type(action.const).__name__
    else:
        # argparse passes the raw command-line string through when no type is given.
        type_name = "str"
    return {
        "dest": action.dest,
        "option_strings": list(action.option_strings),
        "type": type_name,
        "default": json_safe(action.default),
        "choices": None if action.choices is None else json_safe(list(action.choices)),
        "nargs": action.nargs,
        "action": kind,
    }


def collect_into(out: Path) -> None:
    """Child side: import each training script from the cwd (the sd-scripts root) and dump its parser."""
    sys.path.insert(0, os.getcwd())
    scripts: dict[str, dict[str, Any]] = {}
    for script in SCRIPTS:
        parser = importlib.import_module(script.removesuffix(".py")).setup_parser()
        kinds = {cls: name for name, cls in parser._registries["action"].items() if isinstance(name, str)}
        scripts[script] = {
            action.dest: describe_action(action, kinds)
            for action in parser._actions
            if not isinstance(action, argparse._HelpAction)
        }
    out.write_text(json.dumps(scripts), encoding="utf-8")


def git_commit(sd_scripts: Path) -> str:
    """The checked-out commit of the sd-scripts checkout."""
    done = subprocess.run(
        ["git", "-C", str(sd_scripts), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{sd_scripts} is not a git checkout of sd-scripts: {done.stderr.strip()}")
    return done.stdout.strip()


def generate(sd_scripts: Path, python: str) -> dict[str, Any]:
    """Run the collector under `python` in the sd-scripts root and return the full spec."""
    if not (sd_scripts / "train_network.py").is_file():
        raise SystemExit(f"{sd_scripts} has no train_network.py: run `make setup` to check out sd-scripts")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "scripts.json"
        done = subprocess.run(
            [python, str(Path(__file__).resolve()), COLLECT_FLAG, str(out)],
            cwd=sd_scripts,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"collecting sd-scripts options with {python} failed:\n{done.stderr.strip()}")
        scripts = json.loads(out.read_text(encoding="utf-8"))
    return {"sd_scripts_commit": git_commit(sd_scripts), "scripts": scripts}


def dumps(spec: dict[str, Any]) -> str:
    """The committed file's exact text: sorted keys so regenerating never reorders anything."""
    return json.dumps(spec, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def describe_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """One line per difference, e.g. `train_network.py: network_dim.default: null -> 8`."""
    lines: list[str] = []
    if old.get("sd_scripts_commit") != new.get("sd_scripts_commit"):
        lines.append(f"sd_scripts_commit: {old.get('sd_scripts_commit')} -> {new.get('sd_scripts_commit')}")
    old_scripts, new_scripts = old.get("scripts", {}), new.get("scripts", {})
    for script in sorted(old_scripts.keys() | new_scripts.keys()):
        if script not in new_scripts:
            lines.append(f"{script}: script removed")
            continue
        if script not in old_scripts:
            lines.append(f"{script}: script added")
            continue
        before, after = old_scripts[script], new_scripts[script]
        for dest in sorted(before.keys() | after.keys()):
            if dest not in after:
                lines.append(f"{script}: option removed: {dest}")
            elif dest not in before:
                lines.append(f"{script}: option added: {dest} = {json.dumps(after[dest], sort_keys=True)}")
            else:
                for field in sorted(before[dest].keys() | after[dest].keys()):
                    was, now = before[dest].get(field), after[dest].get(field)
                    if was != now:
                        lines.append(f"{script}: {dest}.{field}: {json.dumps(was)} -> {json.dumps(now)}")
    return lines


def check(out: Path, text: str) -> int:
    """Compare the regenerated text with the file; print what changed and return the exit status."""
    if not out.is_file():
        print(f"{out} does not exist; generate it without --check")
        return 1
    current = out.read_text(encoding="utf-8")
    if current == text:
        print(f"{out} is up to date")
        return 0
    changes = describe_differences(json.loads(current), json.loads(text))
    # Same data but different text (formatting edited by hand): show the text diff instead.
    if not changes:
        changes = list(difflib.unified_diff(current.splitlines(), text.splitlines(), str(out), "regenerated"))
    print(f"{out} is out of date with the sd-scripts checkout ({len(changes)} changes):")
    print("\n".join(f"  {line}" for line in changes))
    print("regenerate it with `make sync-args` and review the changes")
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sd-scripts", type=Path, help="the sd-scripts checkout (a git work tree)")
    ap.add_argument("--out", type=Path, help="the spec JSON to write (or to compare with --check)")
    ap.add_argument("--check", action="store_true", help="exit 1 and list the changes if --out differs")
    ap.add_argument("--python", default=sys.executable, help="interpreter with sd-scripts' requirements")
    ap.add_argument(COLLECT_FLAG, type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.collect_into is not None:
        collect_into(args.collect_into)
        return 0
    if args.sd_scripts is None or args.out is None:
        ap.error("--sd-scripts and --out are required")
    text = dumps(generate(args.sd_scripts.resolve(), args.python))
    if args.check:
        return check(args.out, text)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
