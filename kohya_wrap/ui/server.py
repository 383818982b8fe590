"""Serving the web app with uvicorn: the address, the token and the URL to open."""

from __future__ import annotations

import importlib.util
import threading
import webbrowser
from pathlib import Path
from typing import Any

from kohya_wrap.errors import ConfigError
from kohya_wrap.ui.security import LOOPBACK_NAMES, bind_token, is_loopback

EXTRA_MODULES = ("starlette", "uvicorn", "jinja2")


def require_extra() -> None:
    """The `ui` extra is installed, or one line saying how to install it."""
    missing = [name for name in EXTRA_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"ui: the web app needs {', '.join(missing)}: pip install 'kohya-wrap[ui]'")


def app_url(host: str, port: int, token: str | None) -> str:
    """The address to open: wildcard binds are shown as loopback, the token travels once in the query."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def make_app(host: str, runs_dir: Path, config_dir: Path, token: str | None) -> Any:
    """The guarded app for this address: on loopback it answers only to loopback host names (no DNS rebinding)."""
    from kohya_wrap.ui.app import UiContext, create_app

    required = bind_token(host, token)
    allowed = None if required is not None and not is_loopback(host) else frozenset(LOOPBACK_NAMES | {host})
    return create_app(UiContext(runs_dir, config_dir, token=required, allowed_hosts=allowed))


def serve(host: str, port: int, runs_dir: Path, config_dir: Path, token: str | None, open_browser: bool) -> None:
    """Run the app until Ctrl-C; every check happens before the port is bound."""
    import uvicorn

    if not 0 < port < 65536:
        raise ConfigError(f"ui: --port must be between 1 and 65535, got {port}")
    app = make_app(host, runs_dir, config_dir, token)
    if open_browser:
        threading.Timer(1.0, webbrowser.open, args=(app_url(host, port, bind_token(host, token)),)).start()
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)).run()
