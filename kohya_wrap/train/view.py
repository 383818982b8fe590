"""What a running training shows: the small protocol every front-end implements (terminal, queue, web)."""

from __future__ import annotations

from typing import Protocol

from kohya_wrap.train import events as ev


class View(Protocol):
    def event(self, event: ev.Event) -> None: ...
    def raw(self, text: str) -> None: ...
    def note(self, line: str) -> None: ...
    def close(self) -> None: ...


class SilentView:
    """A view that shows nothing: events still go to events.jsonl (for queue workers and tests)."""

    def event(self, event: ev.Event) -> None:
        pass

    def raw(self, text: str) -> None:
        pass

    def note(self, line: str) -> None:
        pass

    def close(self) -> None:
        pass
