"""Processes by identity: which process (host, pid, start) holds a run or a queue job, and whether it still runs.

A pid alone is not an identity: after a reboot or a long time it names another process. The start token
(boot id + start tick, from /proc) tells the two apart, so nothing is ever signalled by mistake.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessRef:
    """One process: its host, pid and a start token that tells a reused pid apart ("" where unknown)."""

    host: str
    pid: int
    start: str

    @classmethod
    def current(cls) -> ProcessRef:
        """This process."""
        return cls(socket.gethostname(), os.getpid(), process_start(os.getpid()) or "")

    def alive(self) -> bool | None:
        """Whether the process still runs: None when it ran on another host (we cannot tell from here)."""
        if self.host != socket.gethostname():
            return None
        return process_alive(self.pid, self.start)

    def token(self) -> str:
        """`host/pid/start`, as run.json keeps it (a host name never holds a slash)."""
        return f"{self.host}/{self.pid}/{self.start}"

    @classmethod
    def parse(cls, token: str) -> ProcessRef | None:
        """The process `token()` wrote, or None when the text is not one."""
        host, _, rest = token.partition("/")
        pid, _, start = rest.partition("/")
        return cls(host, int(pid), start) if host and pid.isdigit() else None


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, pgrp, …); None when unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count fields after its closing one.
    return stat[stat.rindex(")") + 2 :].split()


def process_start(pid: int) -> str | None:
    """A token for the process's start (boot id + start tick on Linux); None where the system has no /proc."""
    fields = stat_fields(pid)
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    return None if fields is None else f"{boot}:{fields[19]}"


def process_alive(pid: int, start: str = "") -> bool:
    """Whether `pid` runs and (when `start` is given and /proc exists) is the same process as then."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    if start:
        now = process_start(pid)
        if now is not None and now != start:
            return False
    return _not_zombie(pid)


def group_alive(pgid: int) -> bool:
    """Whether any process of the process group is still running (zombies excluded where /proc tells)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        fields = stat_fields(int(entry.name))
        if fields is not None and int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _not_zombie(pid: int) -> bool:
    fields = stat_fields(pid)
    return fields is None or fields[0] != "Z"
