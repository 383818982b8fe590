"""Long actions started from the web app (tagging a folder) run in a thread; pages follow their progress."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from kohya_wrap.errors import KohyaWrapError

Report = Callable[[int, int], None]


@dataclass(frozen=True)
class TaskState:
    id: str
    title: str
    status: str  # running | done | failed
    done: int = 0
    total: int = 0
    lines: tuple[str, ...] = ()  # the outcome, or the error lines

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TaskBoard:
    """Every task of this app instance; one at a time per key (e.g. one tagging run per folder)."""

    _states: dict[str, TaskState] = field(default_factory=dict)
    _keys: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, key: str, title: str, work: Callable[[Report], list[str]]) -> TaskState:
        """Run `work(report)` in a thread, or return the task already running for `key`."""
        with self._lock:
            current = self._states.get(self._keys.get(key, ""))
            if current is not None and current.status == "running":
                return current
            state = TaskState(secrets.token_hex(8), title, "running")
            self._states[state.id] = state
            self._keys[key] = state.id

        def report(done: int, total: int) -> None:
            self._set(state.id, done=done, total=total)

        def target() -> None:
            try:
                lines = work(report)
            except KohyaWrapError as exc:
                self._set(state.id, status="failed", lines=exc.lines)
            except Exception as exc:  # noqa: BLE001 - the page must learn that the task died, and why
                self._set(state.id, status="failed", lines=(f"{type(exc).__name__}: {exc}",))
            else:
                self._set(state.id, status="done", lines=tuple(lines))

        threading.Thread(target=target, name=f"ui-task-{state.id}", daemon=True).start()
        return state

    def _set(self, task_id: str, **changes: Any) -> None:
        with self._lock:
            self._states[task_id] = replace(self._states[task_id], **changes)

    def get(self, task_id: str) -> TaskState | None:
        with self._lock:
            return self._states.get(task_id)
