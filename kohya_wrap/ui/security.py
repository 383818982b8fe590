"""The web app's safety rules, free of any web framework: bind address, token, CSRF, and which files it serves."""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from kohya_wrap.errors import ConfigError

TOKEN_ENV = "KOHYA_WRAP_UI_TOKEN"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
MIN_TOKEN_LENGTH = 16


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_token(host: str, token: str | None) -> str | None:
    """The token the app must require when bound to `host`: refused without one off loopback.

    `token` is the --token option; the environment variable is the fallback so it stays out of `ps`.
    """
    token = token or os.environ.get(TOKEN_ENV) or None
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"ui: --token must be at least {MIN_TOKEN_LENGTH} characters (try `openssl rand -hex 16`)")
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"ui: --host {host} lets other machines reach the app; give --token TOKEN "
            f"(or set {TOKEN_ENV}) so only people who have it get in, or bind to 127.0.0.1"
        )
    return token


def same_secret(given: str | None, expected: str) -> bool:
    """Constant-time comparison, so the time taken says nothing about the secret."""
    return given is not None and hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def new_secret() -> str:
    return secrets.token_urlsafe(32)


class PathRefused(ValueError):
    """A requested file lies outside every folder the app serves (or is not a file)."""


def _clean_parts(relative: str) -> tuple[str, ...]:
    """The parts of a relative request path; `..`, absolute paths, backslashes and NULs are refused outright."""
    if not relative or "\x00" in relative or "\\" in relative:
        raise PathRefused(relative)
    pure = PurePosixPath(relative)
    if pure.is_absolute() or any(part in ("..", ".") for part in relative.split("/")):
        raise PathRefused(relative)
    return pure.parts


def resolve_inside(root: Path, relative: str) -> Path:
    """The regular file `root/relative`, after following every symlink, if it stays inside `root`."""
    parts = _clean_parts(relative)
    base = root.resolve()
    try:
        target = base.joinpath(*parts).resolve(strict=True)
    except (OSError, RuntimeError):
        raise PathRefused(relative) from None
    if not target.is_relative_to(base) or not target.is_file():
        raise PathRefused(relative)
    return target


def known_folder(folder: str, allowed: Iterable[Path]) -> Path:
    """`folder` (absolute) when it is exactly one of the `allowed` folders, after resolving symlinks."""
    if not folder or "\x00" in folder:
        raise PathRefused(folder)
    candidate = Path(folder)
    if not candidate.is_absolute() or ".." in candidate.parts:
        raise PathRefused(folder)
    resolved = candidate.resolve()
    if resolved not in {p.resolve() for p in allowed} or not resolved.is_dir():
        raise PathRefused(folder)
    return resolved
