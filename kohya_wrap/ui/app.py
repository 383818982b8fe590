"""The web app: a Starlette application over the command layer, with its guard (token, CSRF, hosts) and file routes."""

from __future__ import annotations

import asyncio
import json
import mimetypes
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kohya_wrap.errors import KohyaWrapError
from kohya_wrap.ui.live import RunWatcher
from kohya_wrap.ui.security import PathRefused, new_secret, resolve_inside, same_secret
from kohya_wrap.ui.tasks import TaskBoard

HERE = Path(__file__).resolve().parent
TOKEN_COOKIE = "kohya_wrap_token"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD"})
MAX_BODY = 1 << 20  # the pages post small JSON documents; a larger body is not one of them
# Same-origin only: every script, style and image comes from the app itself, so it works offline.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


@dataclass
class UiContext:
    """What every page handler needs: the folders, the secrets, the watchers and background tasks."""

    runs_dir: Path
    config_dir: Path
    token: str | None = None
    csrf: str = field(default_factory=new_secret)
    allowed_hosts: frozenset[str] | None = None  # None: any Host header (only when a token guards the app)
    poll_seconds: float = 0.5
    stream_seconds: float = 300.0  # an event stream ends after this; the browser reconnects by itself
    templates: Jinja2Templates = field(init=False)
    watcher: RunWatcher = field(init=False)
    tasks: TaskBoard = field(default_factory=TaskBoard)
    cache: dict[str, Any] = field(default_factory=dict)  # answers kept until their inputs change

    def __post_init__(self) -> None:
        self.runs_dir = self.runs_dir.expanduser().resolve()
        self.config_dir = self.config_dir.expanduser().resolve()
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.globals["csrf"] = self.csrf
        self.templates.env.globals["run_file_url"] = self.run_file_url
        self.templates.env.filters["duration"] = _duration
        self.watcher = RunWatcher(self.runs_dir)

    def page(self, request: Request, template: str, status_code: int = 200, **values: Any) -> Response:
        return self.templates.TemplateResponse(request, template, values, status_code=status_code)

    def run_file_url(self, path: Path) -> str:
        """The URL of a file inside the runs folder (the only place run files are served from)."""
        return "/files/runs/" + path.resolve().relative_to(self.runs_dir).as_posix()

    async def stream(self, request: Request, snapshot: Callable[[], Any], until: Callable[[Any], bool]) -> Response:
        """Server-sent events: `snapshot()` polled off the event loop, sent whenever it changes."""

        async def events() -> AsyncIterator[str]:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.stream_seconds
            last: str | None = None
            yield "retry: 1000\n\n"
            while True:
                value = await asyncio.to_thread(snapshot)
                text = json.dumps(value, ensure_ascii=False, allow_nan=False)
                if text != last:
                    last = text
                    yield f"data: {text}\n\n"
                if until(value) or loop.time() > deadline or await request.is_disconnected():
                    return
                await asyncio.sleep(self.poll_seconds)

        return StreamingResponse(events(), media_type="text/event-stream", headers={"x-accel-buffering": "no"})


def _duration(seconds: float | None) -> str:
    from kohya_wrap.progress import fmt_seconds

    return fmt_seconds(seconds)


def error_response(exc: KohyaWrapError, status_code: int = 400) -> JSONResponse:
    """A refused action: the same `section.key: message` lines the CLI prints."""
    return JSONResponse({"ok": False, "errors": list(exc.lines)}, status_code=status_code)


async def read_json(request: Request, what: str, error: type[KohyaWrapError]) -> dict[str, Any]:
    """The JSON object a page posts; anything else is one line starting with `what` ("dataset: the request")."""
    body = await request.body()
    if len(body) > MAX_BODY:
        raise error(f"{what} is larger than 1 MiB")
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        raise error(f"{what} did not arrive as JSON; reload the page") from None
    if not isinstance(doc, dict):
        raise error(f"{what} did not arrive as a JSON object; reload the page")
    return doc


def refuse(status: int, text: str) -> Response:
    return PlainTextResponse(text + "\n", status_code=status)


class Guard:
    """Checks every request before a handler sees it: Host header, token, CSRF token on every POST."""

    def __init__(self, app: ASGIApp, ctx: UiContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        response = self.check(request)
        if response is not None:
            await self._secured(response)(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_secured)

    @staticmethod
    def _secured(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    def check(self, request: Request) -> Response | None:
        ctx = self.ctx
        host = (request.url.hostname or "").strip("[]")
        if ctx.allowed_hosts is not None and host not in ctx.allowed_hosts:
            # A page elsewhere that resolves its own name to 127.0.0.1 (DNS rebinding) arrives with its Host.
            return refuse(400, f"ui: requests for host {host!r} are refused; open the app at its address")
        if request.method not in SAFE_METHODS and request.method != "POST":
            return refuse(405, f"ui: method {request.method} is not used by this app")
        if ctx.token is not None:
            given = request.query_params.get("token")
            if given is not None and request.method in SAFE_METHODS:
                if not same_secret(given, ctx.token):
                    return refuse(401, "ui: wrong token; open the address `kohya-wrap ui` printed")
                # Swap the token in the address for a cookie, so it leaves the address bar and history.
                query = urlencode([(k, v) for k, v in parse_qsl(request.url.query) if k != "token"])
                target = request.url.path + (f"?{query}" if query else "")
                redirect = RedirectResponse(target, status_code=303)
                redirect.set_cookie(TOKEN_COOKIE, ctx.token, httponly=True, samesite="strict")
                return redirect
            bearer = request.headers.get("authorization", "")
            cookie = SimpleCookie(request.headers.get("cookie", "")).get(TOKEN_COOKIE)
            presented = bearer.removeprefix("Bearer ") if bearer.startswith("Bearer ") else None
            if not same_secret(presented, ctx.token) and not same_secret(cookie.value if cookie else None, ctx.token):
                return refuse(401, "ui: this app needs its token; open the address `kohya-wrap ui` printed")
        if request.method == "POST" and not same_secret(request.headers.get(CSRF_HEADER), ctx.csrf):
            return refuse(403, "ui: missing or wrong CSRF token; reload the page and try again")
        return None


def _download_name(path: Path) -> str | None:
    # LoRA files are downloads; images and text open in the browser.
    return path.name if path.suffix in {".safetensors", ".ckpt", ".pt"} else None


# Report and comparison pages are shown as pages, but sandboxed: no script runs, nothing loads from elsewhere.
PAGE_POLICY = "sandbox; default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'"


def file_response(path: Path) -> Response:
    """A served file: pages sandboxed, other text as plain text, LoRA files as downloads."""
    if path.suffix.lower() in {".html", ".htm"}:
        return FileResponse(
            path, media_type="text/html; charset=utf-8", headers={"content-security-policy": PAGE_POLICY}
        )
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if media_type.startswith("text/") or path.suffix in {".toml", ".jsonl", ".log", ".yaml", ".svg"}:
        media_type = "text/plain; charset=utf-8"  # never let a served file run as a page
    return FileResponse(path, media_type=media_type, filename=_download_name(path))


def file_routes(ctx: UiContext) -> list[BaseRoute]:
    async def run_file(request: Request) -> Response:
        try:
            path = resolve_inside(ctx.runs_dir, request.path_params["path"])
        except PathRefused:
            return refuse(404, "ui: no such file in the runs folder")
        return file_response(path)

    return [Route("/files/runs/{path:path}", run_file)]


def create_app(ctx: UiContext) -> ASGIApp:
    """The whole app for `ctx`, wrapped in its guard."""
    from kohya_wrap.ui.compare import routes as compare_routes
    from kohya_wrap.ui.dataset import routes as dataset_routes
    from kohya_wrap.ui.newrun import routes as newrun_routes
    from kohya_wrap.ui.queue import routes as queue_routes
    from kohya_wrap.ui.runs import routes as runs_routes

    async def home(request: Request) -> Response:
        return RedirectResponse("/runs", status_code=303)

    routes: list[BaseRoute] = [
        Route("/", home),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
        *file_routes(ctx),
        *runs_routes(ctx),
        *newrun_routes(ctx),
        *dataset_routes(ctx),
        *queue_routes(ctx),
        *compare_routes(ctx),
    ]
    return Guard(Starlette(routes=routes), ctx)
