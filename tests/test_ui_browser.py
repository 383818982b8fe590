"""The web app in a real headless Chromium: new run from a preset, live progress, stop/resume, captions, compare.

Needs the `ui` extra, playwright's Python package and a system Chromium (no browser download): set
KOHYA_WRAP_CHROMIUM to its path when it is not /usr/bin/chromium. KOHYA_WRAP_UI_SHOTS=DIR keeps screenshots.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = Path(os.environ.get("KOHYA_WRAP_CHROMIUM", "/usr/bin/chromium"))
SHOTS = os.environ.get("KOHYA_WRAP_UI_SHOTS")
TIMEOUT_MS = 60_000


def _missing() -> str | None:
    for module in ("playwright", "starlette", "uvicorn", "jinja2"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install -e '.[dev,ui]')"
    if not CHROMIUM.is_file():
        return f"no Chromium at {CHROMIUM} (install the system chromium or set KOHYA_WRAP_CHROMIUM)"
    return None


if (problem := _missing()) is not None:
    pytest.skip(f"BROWSER TESTS SKIPPED: {problem}", allow_module_level=True)

from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402
from ui_site import SIMPLE, form_values, write_project  # noqa: E402

from kohya_wrap.ui.server import make_app  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """The project and the address of the app serving it with uvicorn on a free loopback port."""
    import uvicorn

    write_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(make_app("127.0.0.1", tmp_path / "runs", tmp_path, None), host="127.0.0.1", port=port)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield tmp_path, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        yield page
        browser.close()
        assert errors == [], errors


class Runner:
    """`kohya-wrap queue run` in its own process group, as a user would start it beside the app."""

    def __init__(self, root: Path, hang: bool) -> None:
        env = dict(os.environ, FAKE_SD_LOG=SIMPLE)
        if hang:
            env["FAKE_SD_HANG"] = "1"  # the fake run waits after epoch 1 until it is stopped
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kohya_wrap", "queue", "run", "--runs-dir", str(root / "runs")],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def shot(page: Page, tmp_path: Path, name: str) -> None:
    path = tmp_path / "shots" / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(SHOTS) / path.name)


def fill_form(page: Page, values: dict[str, str]) -> None:
    for key, value in values.items():
        field = page.locator(f'[name="{key}"]')
        if field.evaluate("el => el.tagName") == "SELECT":
            field.select_option(value)
        else:
            field.fill(value)


def test_from_preset_to_queue_live_progress_report_caption_and_compare(
    site: tuple[Path, str], page: Page, tmp_path: Path
) -> None:
    root, url = site
    runners: list[Runner] = []
    try:
        # New run from a preset: a bad value shows its error at the field, a good one clears it.
        page.goto(f"{url}/new?preset=sd15-character")
        fill_form(page, form_values(root))
        expect(page.locator("#check-state")).to_have_text("ok: the config validates")
        expect(page.locator("#check-plan")).to_contain_text("steps: 10 per epoch × 2 epochs = 20")
        page.fill('[name="training.epochs"]', "0")
        error = page.locator('[data-error-for="training.epochs"]')
        expect(error).to_have_text("Input should be greater than or equal to 1")
        expect(page.locator('.field[data-key="training.epochs"]')).to_have_class("field invalid")
        shot(page, tmp_path, "new-run-error")
        page.fill('[name="training.epochs"]', "2")
        expect(error).to_have_text("")
        expect(page.locator("#check-state")).to_have_text("ok: the config validates")
        # Save the TOML and queue it.
        page.fill("#save-path", "web.toml")
        page.check("#save-queue")
        page.click("#save")
        link = page.locator("#save-result a")
        expect(link).to_contain_text("queued as job 1: web_lora-")
        assert (root / "web.toml").read_text().startswith("# Made with `kohya-wrap ui` from the sd15-character")
        shot(page, tmp_path, "new-run-queued")

        # Its page, opened before it starts, follows the run live (no reload): epoch 1 saved, then it waits.
        link.click()
        expect(page.locator('#run-live [data-field="status"]')).to_have_text("planned")
        page.evaluate("window.loadedOnce = true")
        runners.append(Runner(root, hang=True))
        expect(page.locator('#run-live [data-field="status"]')).to_have_text("running")
        expect(page.locator('#run-live [data-field="epoch"]')).to_have_text("1")
        expect(page.locator("#loras")).to_contain_text("web_lora-000001.safetensors")
        assert page.evaluate("window.loadedOnce") is True
        shot(page, tmp_path, "run-live")

        # Stop it from the page; the queue's runner stops it cleanly and the page says so.
        page.click('button[data-action="stop"]')
        expect(page.locator('#run-live [data-field="status"]')).to_have_text("interrupted")
        runners.pop().stop()
        # Resume: a runner (this time without the pause) continues it to the end.
        page.reload()
        runners.append(Runner(root, hang=False))
        page.click('button[data-action="resume"]')
        expect(page.locator('#run-live [data-field="status"]')).to_have_text("finished")
        page.reload()
        expect(page.locator("#loras")).to_contain_text("web_lora.safetensors")
        expect(page.locator("#config")).to_contain_text('output_name = "web_lora"')
        expect(page.locator("#command")).to_contain_text("accelerate.commands.launch")
        shot(page, tmp_path, "run-report")

        # Queue it again: a second run of the same config.
        page.click('button[data-action="queue-again"]')
        page.goto(f"{url}/runs")
        expect(page.locator("#runs-table tbody tr")).to_have_count(2)
        expect(page.locator('#runs-table [data-field="status"]:text("finished")')).to_have_count(2)
        shot(page, tmp_path, "runs")
        page.goto(f"{url}/queue")
        expect(page.locator("#queue-table tbody tr")).to_have_count(2)
        shot(page, tmp_path, "queue")

        # The full report page of the run.
        run_id = sorted(p.name for p in (root / "runs").glob("web_lora-*"))[0]
        page.goto(f"{url}/runs/{run_id}")
        page.click("text=Full report page")
        expect(page).to_have_url(f"{url}/files/runs/{run_id}/report/index.html")
        # Shown as a page (sandboxed), with its own images.
        expect(page.locator("h1")).to_contain_text("web_lora")
        page.wait_for_load_state("load")
        assert page.evaluate("[...document.images].map((i) => i.naturalWidth > 0)") == [True]
        shot(page, tmp_path, "report-page")

        # Edit a caption and see where the old one went.
        page.goto(f"{url}/dataset?dir={root / '5_zdm'}")
        expect(page.locator("#tag-stats")).to_contain_text("green_hair")
        page.fill('[data-caption-for="img0.png"]', "zdm, 1boy, smile")
        page.click('[data-save-caption="img0.png"]')
        result = page.locator('[data-result-for="img0.png"]')
        expect(result).to_contain_text("saved; the old caption is in ")
        backup = Path(result.inner_text().removeprefix("saved; the old caption is in "))
        assert (backup / "img0.txt").read_text() == "zdm, 1boy, green_hair"
        assert (root / "5_zdm" / "img0.txt").read_text() == "zdm, 1boy, smile\n"
        shot(page, tmp_path, "dataset")

        # Compare the two runs.
        page.goto(f"{url}/compare")
        for box in page.locator('input[name="run"]').all():
            box.check()
        page.click("#compare-go")
        sheet = page.locator("img.sheet")
        expect(sheet).to_be_visible()
        assert page.evaluate("document.querySelector('img.sheet').naturalWidth") > 0
        shot(page, tmp_path, "compare")
    finally:
        for runner in runners:
            runner.stop()


def test_a_run_started_elsewhere_shows_up_live_on_the_runs_page(
    site: tuple[Path, str], page: Page, tmp_path: Path
) -> None:
    root, url = site
    page.goto(f"{url}/runs")
    expect(page.locator("#no-runs")).to_be_visible()
    env: dict[str, Any] = dict(os.environ, FAKE_SD_LOG=SIMPLE)
    subprocess.run(
        [sys.executable, "-m", "kohya_wrap", "train", str(root / "lora.toml")],
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
    )
    expect(page.locator("#runs-table tbody tr")).to_have_count(1)
    expect(page.locator('#runs-table [data-field="status"]')).to_have_text("finished")
    expect(page.locator('#runs-table [data-field="loss"]')).to_have_text("1.1900")


def test_a_run_started_with_the_cli_stops_from_its_page(
    site: tuple[Path, str], page: Page, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fake_sd

    root, url = site
    monkeypatch.setenv("FAKE_SD_LOG", SIMPLE)
    proc, run = fake_sd.start_training(root)
    try:
        page.goto(f"{url}/runs/{run.name}")
        expect(page.locator('#run-live [data-field="status"]')).to_have_text("running")
        page.click('button[data-action="stop"]')
        expect(page.locator("#toast")).to_contain_text(f"Ctrl-C sent to its trainer (pid {proc.pid})")
        expect(page.locator('#run-live [data-field="status"]')).to_have_text("interrupted")
        proc.communicate(timeout=60)
        page.reload()
        expect(page.locator('button[data-action="resume"]')).to_be_visible()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_queue_priority_is_set_on_the_queue_page(site: tuple[Path, str], page: Page) -> None:
    root, url = site
    for _ in range(2):
        subprocess.run([sys.executable, "-m", "kohya_wrap", "queue", "add", "lora.toml"], cwd=root, check=True)
    page.goto(f"{url}/queue")
    first = page.locator('#queue-table tr[data-job="1"] td').nth(1)
    expect(first).to_have_text("1")
    page.fill('[data-priority-job="2"]', "5")
    page.press('[data-priority-job="2"]', "Enter")
    # The page reloads with job 2 first in line.
    expect(page.locator('#queue-table tr[data-job="2"] td').nth(1)).to_have_text("1")
    expect(page.locator('[data-priority-job="2"]')).to_have_value("5")
    expect(first).to_have_text("2")
    page.fill('[data-priority-job="1"]', "")  # a number field takes no other text; empty is refused
    page.click('[data-priority-set="1"]')
    expect(page.locator("#queue-errors")).to_contain_text("queue priority: '' is not a whole number")


def test_tagging_a_folder_shows_a_progress_bar(site: tuple[Path, str], page: Page, tmp_path: Path) -> None:
    from tagger_model import build_tagger_model, quadrant_image

    root, url = site
    model = build_tagger_model(tmp_path / "tagger")
    raw = root / "raw"
    raw.mkdir()
    for i in range(3):
        quadrant_image(raw / f"{i}.png", (0, 0, 255), (0, 0, 0), (0, 0, 0), (i * 80, 0, 0))
    (root / "tag.toml").write_text(
        f'preset = "sd15-character"\n[model]\nbase = "model"\n[dataset]\ndirs = [{{ path = "raw" }}]\n'
        f'[tagging]\nmodel = "{model}"\ntrigger_word = "zdm"\n'
    )
    page.goto(f"{url}/dataset")
    page.get_by_role("link", name=str(raw)).click()
    expect(page.locator("#dataset")).to_contain_text("3 images, 3 without a caption.")
    page.click("#tag-start")
    expect(page.locator("#tag-result")).to_have_text("3 captions written, 0 kept as they were")
    assert page.evaluate(
        "[document.getElementById('tag-progress').value, document.getElementById('tag-progress').max]"
    ) == [3, 3]
    shot(page, tmp_path, "tagging")
    # The page reloads with the new captions.
    expect(page.locator('[data-caption-for="0.png"]')).to_have_value(re.compile(r"^zdm, "))
    assert sorted(p.name for p in raw.glob("*.txt")) == ["0.txt", "1.txt", "2.txt"]
