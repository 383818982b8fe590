"""The web app's safety rules: files outside the served folders, the bind address and token, CSRF, Host headers."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest
from filetree import snapshot

pytest.importorskip("starlette", reason="the web app's extra is not installed: pip install 'kohya-wrap[ui]'")

from click.testing import CliRunner  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from kohya_wrap.cli import main  # noqa: E402
from kohya_wrap.errors import ConfigError  # noqa: E402
from kohya_wrap.ui.app import UiContext, create_app  # noqa: E402
from kohya_wrap.ui.security import TOKEN_ENV, bind_token, is_loopback  # noqa: E402
from kohya_wrap.ui.server import make_app  # noqa: E402

TOKEN = "s3cret-token-0123456789"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A runs folder with one run, a dataset folder named by a config, and secrets beside them."""
    runs = tmp_path / "runs"
    run = runs / "r1"
    (run / "output").mkdir(parents=True)
    (run / "run.json").write_text(
        '{"status": "finished", "name": "r1", "family": "sd15", "script": "train_network.py", '
        '"config_hash": "x", "total_steps": 4, "epochs": 1, "created": "2026-01-01T00:00:00+00:00"}'
    )
    (run / "output" / "r1.safetensors").write_bytes(b"lora")
    (tmp_path / "secret.txt").write_text("secret")
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (data / "a.txt").write_text("zdm, 1boy\n")
    (tmp_path / "model").mkdir()
    (tmp_path / "c.toml").write_text(
        'preset = "sd15-character"\n[model]\nbase = "model"\n[dataset]\ndirs = [{ path = "data" }]\n'
    )
    return tmp_path


def client_for(root: Path, token: str | None = None, hosts: frozenset[str] | None = None) -> TestClient:
    allowed = frozenset({"127.0.0.1", "localhost", "::1"}) if hosts is None else hosts
    ctx = UiContext(root / "runs", root, token=token, allowed_hosts=allowed, stream_seconds=0.2)
    return TestClient(create_app(ctx), base_url="http://127.0.0.1")


def raw_get(root: Path, raw_path: bytes) -> tuple[int, bytes]:
    """Send a path to the app exactly as given (HTTP clients would normalise `..` away)."""
    app = create_app(UiContext(root / "runs", root, allowed_hosts=frozenset({"127.0.0.1"})))
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": raw_path.decode("latin-1"),
        "raw_path": raw_path,
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")  # type: ignore[misc]
    assert isinstance(status, int)
    return status, body


# ---- files ---------------------------------------------------------------------------------------


def test_a_run_file_is_served(site: Path) -> None:
    response = client_for(site).get("/files/runs/r1/output/r1.safetensors")
    assert response.status_code == 200 and response.content == b"lora"


@pytest.mark.parametrize(
    "raw",
    [
        b"/files/runs/../secret.txt",
        b"/files/runs/r1/../../secret.txt",
        b"/files/runs/%2e%2e/secret.txt",
        b"/files/runs/%2E%2E%2Fsecret.txt",
        b"/files/runs/r1/..%2f..%2fsecret.txt",
        b"/files/runs/%2fetc%2fpasswd",
        b"/files/runs//etc/passwd",
        b"/files/runs/r1/output/..%5c..%5c..%5csecret.txt",
        b"/files/runs/%252e%252e/secret.txt",
    ],
)
def test_path_traversal_is_refused(site: Path, raw: bytes) -> None:
    status, body = raw_get(site, raw)
    assert status == 404
    assert b"secret" not in body and b"root:" not in body


def test_a_symlink_out_of_the_runs_folder_is_refused(site: Path) -> None:
    (site / "runs" / "r1" / "leak.txt").symlink_to(site / "secret.txt")
    (site / "runs" / "r1" / "outside").symlink_to(site)
    client = client_for(site)
    assert client.get("/files/runs/r1/leak.txt").status_code == 404
    assert client.get("/files/runs/r1/outside/secret.txt").status_code == 404
    # A link that stays inside the runs folder is fine.
    (site / "runs" / "r1" / "inside.safetensors").symlink_to(site / "runs" / "r1" / "output" / "r1.safetensors")
    assert client.get("/files/runs/r1/inside.safetensors").content == b"lora"


def test_only_dataset_folders_of_known_configs_are_served(site: Path) -> None:
    client = client_for(site)
    data = site / "data"
    assert client.get("/files/dataset", params={"dir": str(data), "name": "a.png"}).status_code == 200
    refused = [
        {"dir": str(site), "name": "secret.txt"},  # not a dataset folder
        {"dir": str(data), "name": "../secret.txt"},
        {"dir": str(data / ".."), "name": "secret.txt"},
        {"dir": f"{data}/../data", "name": "a.png"},
        {"dir": "data", "name": "a.png"},  # relative
    ]
    for params in refused:
        response = client.get("/files/dataset", params=params)
        assert response.status_code == 404, params
        assert response.text == "ui: no such file in a known dataset folder\n"
    (data / "leak.png").symlink_to(site / "secret.txt")
    assert client.get("/files/dataset", params={"dir": str(data), "name": "leak.png"}).status_code == 404
    assert client.get("/dataset", params={"dir": str(site)}).status_code == 404


def test_run_names_cannot_leave_the_runs_folder(site: Path) -> None:
    (site / "runs" / ".hidden").mkdir()
    (site / "runs" / ".hidden" / "run.json").write_text((site / "runs" / "r1" / "run.json").read_text())
    for name in (b"..", b"%2e%2e", b".hidden", b"r1%2f..%2f..", b"..%2fruns%2fr1"):
        for suffix in (b"", b"/report", b"/stop"):
            assert raw_get(site, b"/runs/" + name + suffix)[0] in (404, 405), name + suffix
        assert raw_get(site, b"/events/runs/" + name)[0] == 404, name


# ---- bind address and token ----------------------------------------------------------------------


def test_loopback_needs_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "192.168.1.5", "::", "example.com"))
    assert bind_token("127.0.0.1", None) is None


def test_a_non_loopback_bind_without_a_token_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        bind_token("0.0.0.0", None)
    message = (
        "ui: --host 0.0.0.0 lets other machines reach the app; give --token TOKEN (or set KOHYA_WRAP_UI_TOKEN) "
        "so only people who have it get in, or bind to 127.0.0.1"
    )
    assert caught.value.lines == (message,)
    result = CliRunner().invoke(main, ["ui", "--host", "0.0.0.0", "--runs-dir", "runs"])
    assert result.exit_code == 2
    assert result.stderr == message + "\n" and result.stdout == ""
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_short_token_is_refused_and_the_env_var_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with pytest.raises(ConfigError) as caught:
        bind_token("0.0.0.0", "short")
    assert caught.value.lines == ("ui: --token must be at least 16 characters (try `openssl rand -hex 16`)",)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert bind_token("0.0.0.0", None) == TOKEN


def test_with_a_token_every_request_needs_it(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    client = TestClient(make_app("0.0.0.0", site / "runs", site, TOKEN), base_url="http://192.168.1.5:7860")
    for url in ("/runs", "/files/runs/r1/output/r1.safetensors", "/events/runs", "/static/app.js"):
        response = client.get(url)
        assert response.status_code == 401, url
        assert response.text == "ui: this app needs its token; open the address `kohya-wrap ui` printed\n"
    assert client.get("/runs?token=wrong-token-0123456789").status_code == 401
    response = client.get(f"/runs?token={TOKEN}&x=1", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/runs?x=1"
    assert "HttpOnly" in response.headers["set-cookie"] and "SameSite=strict" in response.headers["set-cookie"]
    assert client.get("/runs").status_code == 200  # the cookie now carries it
    bearer = TestClient(make_app("0.0.0.0", site / "runs", site, TOKEN), base_url="http://192.168.1.5:7860")
    assert bearer.get("/runs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_loopback_refuses_foreign_host_headers(site: Path) -> None:
    client = TestClient(make_app("127.0.0.1", site / "runs", site, None), base_url="http://evil.example")
    response = client.get("/runs")
    assert response.status_code == 400
    assert response.text == "ui: requests for host 'evil.example' are refused; open the app at its address\n"
    assert (
        TestClient(make_app("127.0.0.1", site / "runs", site, None), base_url="http://localhost:7860")
        .get("/runs")
        .status_code
        == 200
    )


# ---- CSRF ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/dataset/caption", {"dir": "DATA", "name": "a.png", "caption": "changed"}),
        ("/dataset/edit", {"dir": "DATA", "remove": "1boy", "apply": True}),
        ("/new/save", {"preset": "sd15-character", "values": {}, "path": "new.toml"}),
        ("/queue/pause", {}),
        ("/compare", {"runs": ["r1", "r1"]}),
    ],
)
def test_a_post_without_the_csrf_token_is_refused_and_writes_nothing(
    site: Path, url: str, body: dict[str, object]
) -> None:
    body = {k: (str(site / "data") if v == "DATA" else v) for k, v in body.items()}
    client = client_for(site)
    before = snapshot(site)
    for headers in ({}, {"X-CSRF-Token": "wrong"}):
        response = client.post(url, json=body, headers=headers)
        assert response.status_code == 403
        assert response.text == "ui: missing or wrong CSRF token; reload the page and try again\n"
    assert snapshot(site) == before


def test_state_changing_routes_take_only_post(site: Path) -> None:
    client = client_for(site)
    assert client.get("/dataset/caption").status_code == 405
    assert client.get("/queue/pause").status_code == 405
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/runs").text)
    assert csrf is not None
    for method in ("PUT", "DELETE", "PATCH"):
        response = client.request(method, "/new/save", headers={"X-CSRF-Token": csrf.group(1)})
        assert response.status_code == 405, method


def test_a_caption_post_with_the_token_writes_and_backs_up(site: Path) -> None:
    client = client_for(site)
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/runs").text)
    assert csrf is not None
    response = client.post(
        "/dataset/caption",
        json={"dir": str(site / "data"), "name": "a.png", "caption": "zdm, smile"},
        headers={"X-CSRF-Token": csrf.group(1)},
    )
    assert response.status_code == 200, response.text
    assert (site / "data" / "a.txt").read_text() == "zdm, smile\n"
    (backup,) = (site / "data" / ".kohya_wrap-backup").iterdir()
    assert (backup / "a.txt").read_text() == "zdm, 1boy\n"


def test_a_caption_for_a_file_outside_the_folder_is_refused(site: Path) -> None:
    client = client_for(site)
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/runs").text)
    assert csrf is not None
    before = snapshot(site)
    for name in ("../secret.png", "/etc/passwd", "..", "sub/a.png"):
        response = client.post(
            "/dataset/caption",
            json={"dir": str(site / "data"), "name": name, "caption": "x"},
            headers={"X-CSRF-Token": csrf.group(1)},
        )
        assert response.status_code == 400
        assert response.json()["errors"] == [f"dataset: {name!r} is not a file name in this folder"]
    assert snapshot(site) == before


def test_environment_is_not_leaked_into_pages(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    client = TestClient(make_app("127.0.0.1", site / "runs", site, None), base_url="http://127.0.0.1")
    # On loopback the env token is still required when set: whoever set it asked for it.
    assert client.get("/runs").status_code == 401
    assert TOKEN not in client.get("/runs").text
    assert os.environ[TOKEN_ENV] == TOKEN


def test_pages_in_the_runs_folder_are_sandboxed_and_other_text_is_plain(site: Path) -> None:
    report = site / "runs" / "r1" / "report"
    report.mkdir()
    (report / "index.html").write_text("<h1>report</h1><script>alert(1)</script>")
    (report / "x.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>")
    client = client_for(site)
    page = client.get("/files/runs/r1/report/index.html")
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"].startswith("sandbox; default-src 'none'")
    assert client.get("/files/runs/r1/report/x.svg").headers["content-type"] == "text/plain; charset=utf-8"
