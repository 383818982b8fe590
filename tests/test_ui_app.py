"""The web app over HTTP (Starlette's test client): every page, live streams, forms, captions, queue, compare."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from filetree import snapshot

pytest.importorskip("starlette", reason="the web app's extra is not installed: pip install 'kohya-wrap[ui]'")

from starlette.testclient import TestClient  # noqa: E402
from tagger_model import build_tagger_model, quadrant_image  # noqa: E402
from ui_site import SIMPLE, form_values, train, write_project  # noqa: E402

from kohya_wrap.config.presets import load_config  # noqa: E402
from kohya_wrap.ui.app import UiContext, create_app  # noqa: E402

HERE = Path(__file__).parent
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("ui")
    config = write_project(root)
    old = os.environ.get("FAKE_SD_LOG")
    os.environ["FAKE_SD_LOG"] = SIMPLE
    try:
        train(config)
        train(config, "network.dim=8")
    finally:
        if old is None:
            del os.environ["FAKE_SD_LOG"]
        else:
            os.environ["FAKE_SD_LOG"] = old
    yield root


def make_client(root: Path, **options: object) -> TestClient:
    ctx = UiContext(root / "runs", root, allowed_hosts=LOOPBACK, stream_seconds=0.5, poll_seconds=0.05)
    for key, value in options.items():
        setattr(ctx, key, value)
    return TestClient(create_app(ctx), base_url="http://127.0.0.1")


@pytest.fixture
def client(project: Path) -> TestClient:
    return make_client(project)


def csrf_of(client: TestClient) -> str:
    match = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/runs").text)
    assert match
    return match.group(1)


def post(client: TestClient, url: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    response = client.post(url, json=body, headers={"X-CSRF-Token": csrf_of(client)})
    return response.status_code, response.json()


def run_ids(project: Path) -> list[str]:
    return sorted(p.name for p in (project / "runs").iterdir() if (p / "run.json").is_file())


# ---- pages ---------------------------------------------------------------------------------------


def test_home_goes_to_runs_and_every_run_is_listed(client: TestClient, project: Path) -> None:
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/runs"
    page = client.get("/runs").text
    for run_id in run_ids(project):
        assert f'<a href="/runs/{run_id}">{run_id}</a>' in page
    assert page.count('data-field="status">finished</span>') == 2
    # The fake log trains 8 steps of epoch 2 with a final avr_loss of 1.19.
    assert '<td data-field="loss">1.1900</td>' in page


def test_run_page_shows_the_report(client: TestClient, project: Path) -> None:
    run_id = run_ids(project)[0]
    page = client.get(f"/runs/{run_id}").text
    assert f'href="/files/runs/{run_id}/output/e2e_lora-000001.safetensors" download>' in page
    assert f'href="/files/runs/{run_id}/output/e2e_lora.safetensors" download>' in page
    config = (project / "runs" / run_id / "config.toml").read_text()
    assert "output_name = &#34;e2e_lora&#34;" in page and config.splitlines()[0] in page
    assert "accelerate.commands.launch" in page
    assert '<svg class="chart"' in page
    fragment = client.get(f"/runs/{run_id}/report").text
    # Not queued: no stop or resume, but the config can be queued again as a new run.
    assert fragment.startswith('<div class="actions">\n\n<button type="button" data-action="queue-again">Queue again')
    assert "<h2>Samples</h2>" in fragment and "e2e_lora.safetensors" in fragment


def test_unknown_run_is_404(client: TestClient) -> None:
    response = client.get("/runs/nope")
    assert response.status_code == 404
    assert "run: no run called &#39;nope&#39;" in response.text


def test_lora_files_download_and_text_files_are_plain(client: TestClient, project: Path) -> None:
    run_id = run_ids(project)[0]
    lora = client.get(f"/files/runs/{run_id}/output/e2e_lora.safetensors")
    assert lora.status_code == 200 and lora.content == b"fake lora"
    assert lora.headers["content-disposition"] == 'attachment; filename="e2e_lora.safetensors"'
    toml = client.get(f"/files/runs/{run_id}/config.toml")
    assert toml.headers["content-type"] == "text/plain; charset=utf-8"
    assert toml.text == (project / "runs" / run_id / "config.toml").read_text()
    assert toml.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'self'" in toml.headers["content-security-policy"]


def test_static_assets_are_served_by_the_app(client: TestClient) -> None:
    page = client.get("/runs").text
    assert '<link rel="stylesheet" href="/static/app.css">' in page
    assert '<script src="/static/app.js" defer></script>' in page
    assert "http://" not in page and "https://" not in page  # no CDN: works offline
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/app.css").status_code == 200


def test_run_events_stream_the_summary(client: TestClient, project: Path) -> None:
    run_id = run_ids(project)[0]
    response = client.get(f"/events/runs/{run_id}")
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    assert len(events) == 1
    assert {k: events[0][k] for k in ("id", "status", "epoch", "epochs", "step", "loss")} == {
        "id": run_id,
        "status": "finished",
        "epoch": 2,
        "epochs": 2,
        "step": 8,
        "loss": 1.19,
    }


def test_runs_stream_lists_every_run(client: TestClient, project: Path) -> None:
    response = client.get("/events/runs")
    first = next(line for line in response.text.splitlines() if line.startswith("data: "))
    assert sorted(run["id"] for run in json.loads(first[6:])) == run_ids(project)


# ---- new run -------------------------------------------------------------------------------------


def test_new_run_form_has_the_schema_names_limits_and_help(client: TestClient) -> None:
    page = client.get("/new?preset=sd15-character").text
    assert '<input id="f-training.epochs" name="training.epochs" type="text" inputmode="decimal" value="10"' in page
    assert 'Passes over the whole dataset. <span class="limits">(1 ≤ value ≤ 10000)</span>' in page
    assert '<option value="cosine_with_restarts" selected>cosine_with_restarts</option>' in page
    assert 'name="dataset.dirs"' in page
    assert client.get("/new?preset=nope").status_code == 404


def form(project: Path, **changes: str) -> dict[str, object]:
    return {"preset": "sd15-character", "values": form_values(project) | changes}


def test_check_reports_errors_by_key(client: TestClient, project: Path) -> None:
    status, result = post(client, "/new/check", form(project, **{"training.epochs": "0"}))
    assert status == 200
    assert result["ok"] is False
    assert result["errors"] == ["training.epochs: Input should be greater than or equal to 1"]


def test_check_reports_steps_time_and_vram(client: TestClient, project: Path) -> None:
    status, result = post(client, "/new/check", form(project))
    assert status == 200 and result["ok"] is True, result
    plan = result["plan"]
    assert isinstance(plan, list)
    assert plan[:2] == [
        "sd15 LoRA 'web_lora', 4 images × repeats = 20, batch 2, 2 epochs",
        "steps: 10 per epoch × 2 epochs = 20",
    ]
    assert any(line.startswith("vram: ≈ ") for line in plan)
    assert any(line.startswith("cost: 40") for line in plan)


def test_check_shows_the_plan_lines_validate_prints(client: TestClient, project: Path) -> None:
    status, result = post(client, "/new/check", form(project, **{"validation.split": "0.25"}))
    assert status == 200 and result["ok"] is True, result
    plan = result["plan"]
    assert isinstance(plan, list)
    assert plan[:3] == [
        "sd15 LoRA 'web_lora', 3 images × repeats = 15, batch 2, 2 epochs",
        "steps: 8 per epoch × 2 epochs = 16",
        "validation: 1 image held out, their loss measured after every epoch",
    ]


def test_save_writes_a_new_config_that_loads_to_the_checked_settings(client: TestClient, project: Path) -> None:
    body = form(project) | {"path": "web.toml"}
    status, result = post(client, "/new/save", body)
    assert status == 200 and result == {"ok": True, "saved": str(project / "web.toml")}
    text = (project / "web.toml").read_text()
    assert text.startswith("# Made with `kohya-wrap ui` from the sd15-character preset; keys below override it.\n")
    assert 'preset = "sd15-character"\n' in text
    assert "epochs = 2\n" in text and "dim =" not in text  # only what differs from the preset
    assert load_config(project / "web.toml").config.training.epochs == 2
    # Saving again under the same name is refused and leaves the file as it was.
    status, result = post(client, "/new/save", form(project, **{"training.epochs": "3"}) | {"path": "web.toml"})
    assert status == 400
    assert result["errors"] == [
        f"save: {project / 'web.toml'} already exists; choose another name (nothing is overwritten)"
    ]
    assert (project / "web.toml").read_text() == text
    (project / "web.toml").unlink()


@pytest.mark.parametrize(
    ("url", "body", "message"),
    [
        ("/new/save", b"{not json", "ui: the form did not arrive as JSON; reload the page"),
        ("/new/save", b"[1, 2]", "ui: the form did not arrive as a JSON object; reload the page"),
        ("/dataset/caption", b"x" * (1 << 20) + b"x", "dataset: the request is larger than 1 MiB"),
        ("/dataset/caption", b"{}", "dataset: the request names no dataset folder; reload the page"),
        ("/compare", b'"runs"', "compare: the choice did not arrive as a JSON object; reload the page"),
    ],
)
def test_malformed_posts_are_one_line_and_write_nothing(
    client: TestClient, project: Path, url: str, body: bytes, message: str
) -> None:
    before = sorted(str(p.relative_to(project)) for p in project.rglob("*"))
    response = client.post(url, content=body, headers={"X-CSRF-Token": csrf_of(client)})
    assert (response.status_code, response.json()) == (400, {"ok": False, "errors": [message]})
    assert sorted(str(p.relative_to(project)) for p in project.rglob("*")) == before


def test_save_with_errors_writes_nothing(client: TestClient, project: Path) -> None:
    status, result = post(client, "/new/save", form(project, **{"network.dim": "0"}) | {"path": "bad.toml"})
    assert status == 400
    assert result["errors"] == ["network.dim: Input should be greater than or equal to 1"]
    assert not (project / "bad.toml").exists()


@pytest.mark.parametrize("name", ["../escape.toml", "sub/x.toml", ".hidden.toml"])
def test_save_refuses_names_outside_the_config_folder(client: TestClient, project: Path, name: str) -> None:
    status, result = post(client, "/new/save", form(project) | {"path": name})
    assert status == 400
    assert result["errors"] == [f"save: {name!r}: give a plain file name (it is saved in {project})"]
    assert not (project.parent / "escape.toml").exists()


# ---- dataset -------------------------------------------------------------------------------------


def test_dataset_page_shows_images_captions_and_tag_counts(client: TestClient, project: Path) -> None:
    listing = client.get("/dataset").text
    folder = project / "5_zdm"
    assert f">{folder}</a>" in listing
    page = client.get("/dataset", params={"dir": str(folder)}).text
    assert page.count('<figure class="image"') == 4
    assert ">zdm, 1boy, green_hair</textarea>" in page
    assert "<tr ><td>4</td><td>100 %</td><td>green_hair</td></tr>" in page.replace('class="proposed"', "")
    image = client.get("/files/dataset", params={"dir": str(folder), "name": "img0.png"})
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"


def test_bulk_edit_previews_then_applies_with_a_backup(client: TestClient, project: Path) -> None:
    folder = project / "5_zdm"
    before = snapshot(folder)
    status, result = post(client, "/dataset/edit", {"dir": str(folder), "prune": True})
    assert status == 200
    # green_hair is in every caption; 1boy is on the keep-list and zdm is the trigger word.
    assert result["pruned"] == ["green_hair"] and result["changes"] == 4 and result["applied"] is False
    assert snapshot(folder) == before
    status, result = post(client, "/dataset/edit", {"dir": str(folder), "replace": "1boy=solo", "apply": True})
    assert status == 200 and result["applied"] is True and result["changes"] == 4
    assert (folder / "img0.txt").read_text() == "zdm, solo, green_hair\n"
    backup = Path(str(result["backup"]))
    assert (
        backup.parent == folder / ".kohya_wrap-backup" and (backup / "img0.txt").read_text() == "zdm, 1boy, green_hair"
    )
    post(client, "/dataset/edit", {"dir": str(folder), "replace": "solo=1boy", "apply": True})


def test_caption_edit_backs_up_the_old_caption(client: TestClient, project: Path) -> None:
    folder = project / "5_zdm"
    old = (folder / "img1.txt").read_text()
    status, result = post(client, "/dataset/caption", {"dir": str(folder), "name": "img1.png", "caption": "zdm, smile"})
    assert status == 200 and result["changed"] is True
    assert (folder / "img1.txt").read_text() == "zdm, smile\n"
    assert (Path(str(result["backup"])) / "img1.txt").read_text() == old
    status, result = post(client, "/dataset/caption", {"dir": str(folder), "name": "img1.png", "caption": " , "})
    assert status == 400
    assert result["errors"] == [f"{folder / 'img1.txt'}: a caption needs at least one tag"]
    post(client, "/dataset/caption", {"dir": str(folder), "name": "img1.png", "caption": old})


def test_tagging_a_folder_reports_progress_until_done(tmp_path: Path) -> None:
    model = build_tagger_model(tmp_path / "tagger")
    images = tmp_path / "raw"
    images.mkdir()
    for i in range(3):
        quadrant_image(images / f"{i}.png", (0, 0, 255), (0, 0, 0), (0, 0, 0), (i * 80, 0, 0))
    (tmp_path / "model").mkdir()
    (tmp_path / "tag.toml").write_text(
        f'preset = "sd15-character"\n[model]\nbase = "model"\n[dataset]\ndirs = [{{ path = "raw" }}]\n'
        f'[tagging]\nmodel = "{model}"\ntrigger_word = "zdm"\n'
    )
    client = make_client(tmp_path)
    status, result = post(client, "/dataset/tag", {"dir": str(images)})
    assert status == 200
    events = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = client.get(f"/events/tasks/{result['task']}").text
        events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
        if events and events[-1]["status"] != "running":
            break
    assert events[-1]["status"] == "done", events
    assert events[-1]["done"] == events[-1]["total"] == 3
    assert events[-1]["lines"] == ["3 captions written, 0 kept as they were"]
    assert sorted(p.name for p in images.glob("*.txt")) == ["0.txt", "1.txt", "2.txt"]
    assert (images / "0.txt").read_text().startswith("zdm, ")


# ---- queue ---------------------------------------------------------------------------------------


def test_queue_from_the_form_then_stop_resume_and_queue_again(tmp_path: Path) -> None:
    write_project(tmp_path)
    client = make_client(tmp_path)
    body = form(tmp_path) | {"path": "queued.toml", "queue": True, "priority": "3"}
    status, result = post(client, "/new/save", body)
    assert status == 200, result
    assert result["saved"] == str(tmp_path / "queued.toml") and result["job"] == 1
    run_id = str(result["run"])
    assert run_id.startswith("web_lora-") and (tmp_path / "runs" / run_id / "run.json").is_file()
    page = client.get("/queue").text
    assert '<tr data-job="1" data-state="queued">' in page and 'data-priority-job="1" value="3"' in page
    status, result = post(client, "/queue/1/priority", {"priority": "-2"})
    assert status == 200 and result["job"]["priority"] == -2  # type: ignore[index]
    assert 'data-priority-job="1" value="-2"' in client.get("/queue").text
    assert post(client, "/queue/1/priority", {"priority": "soon"}) == (
        400,
        {"ok": False, "errors": ["queue priority: 'soon' is not a whole number; higher runs first, e.g. 5 or -1"]},
    )
    assert 'data-action="stop"' in client.get(f"/runs/{run_id}").text
    status, result = post(client, f"/runs/{run_id}/stop", {})
    assert status == 200 and result["job"]["state"] == "cancelled"  # type: ignore[index]
    status, result = post(client, "/queue/1/cancel", {})
    assert status == 400 and result["errors"] == ["queue cancel: job 1 is cancelled"]
    assert post(client, "/queue/1/priority", {"priority": 9}) == (
        400,
        {"ok": False, "errors": ["queue priority: job 1 is cancelled; only a queued job waits for its turn"]},
    )
    assert "<td>-2</td>" in client.get("/queue").text
    assert 'data-action="resume"' in client.get(f"/runs/{run_id}").text
    status, result = post(client, f"/runs/{run_id}/resume", {})
    assert status == 200 and result["job"]["state"] == "queued"  # type: ignore[index]
    status, result = post(client, f"/runs/{run_id}/queue-again", {})
    assert status == 200 and result["job"]["id"] == 2  # type: ignore[index]
    assert post(client, "/queue/pause", {}) == (200, {"ok": True, "paused": True})
    assert '<b id="paused">paused</b>' in client.get("/queue").text
    assert post(client, "/queue/resume", {}) == (200, {"ok": True, "paused": False})
    assert post(client, "/queue/stop", {}) == (
        404,
        {"ok": False, "errors": ["queue: unknown action 'stop'; use pause or resume"]},
    )
    assert post(client, "/queue/2/explode", {}) == (
        400,
        {"ok": False, "errors": ["queue: unknown action 'explode'; use cancel, retry, remove or priority"]},
    )
    status, result = post(client, "/queue/2/remove", {})
    assert status == 200 and result["job"]["id"] == 2  # type: ignore[index]


def test_a_run_started_with_the_cli_stops_from_its_page_and_resumes_through_the_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fake_sd

    from kohya_wrap.commands.queue import status

    write_project(tmp_path)
    monkeypatch.setenv("FAKE_SD_LOG", SIMPLE)
    proc, run = fake_sd.start_training(tmp_path)
    client = make_client(tmp_path)
    assert 'data-action="stop"' in client.get(f"/runs/{run.name}").text
    status_code, result = post(client, f"/runs/{run.name}/stop", {})
    assert status_code == 200, result
    assert str(result["message"]).startswith(f"stopping {run.name}: Ctrl-C sent to its trainer (pid {proc.pid})")
    proc.communicate(timeout=60)
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    page = client.get(f"/runs/{run.name}").text
    assert 'data-action="resume"' in page and 'data-action="stop"' not in page
    status_code, result = post(client, f"/runs/{run.name}/resume", {})
    assert status_code == 200 and result["message"] == "job 1 is queued", result
    (entry,) = status(tmp_path / "runs").entries
    assert entry.job.run_dir == run and entry.job.resume and entry.job.state == "queued"
    status_code, result = post(client, f"/runs/{run.name}/resume", {})
    assert (status_code, result) == (400, {"ok": False, "errors": [f"queue: {run.name} is already job 1 (queued)"]})


def test_a_run_whose_trainer_was_killed_resumes_from_its_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from kohya_wrap.commands.queue import status

    config = write_project(tmp_path)
    monkeypatch.setenv("FAKE_SD_LOG", SIMPLE)
    run = train(config)
    client = make_client(tmp_path)
    assert post(client, f"/runs/{run.name}/resume", {}) == (
        400,
        {"ok": False, "errors": [f"queue: {run.name} is finished; only an interrupted or failed run resumes"]},
    )
    assert not (tmp_path / "runs" / "queue.sqlite3").exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = json.loads((run / "run.json").read_text())
    record.update(status="running", trainer=f"{socket.gethostname()}/{dead.pid}/")  # as kill -9 leaves it
    (run / "run.json").write_text(json.dumps(record))
    page = client.get(f"/runs/{run.name}").text
    assert 'data-action="resume"' in page and 'data-action="stop"' not in page
    assert f"its trainer (pid {dead.pid}) is gone: `kohya-wrap train --resume {run}` continues it" in page
    status_code, result = post(client, f"/runs/{run.name}/resume", {})
    assert status_code == 200 and result["message"] == "job 1 is queued", result
    (entry,) = status(tmp_path / "runs").entries
    assert entry.job.resume and entry.job.run_dir == run


def test_a_sweep_is_checked_whole_then_queued(tmp_path: Path) -> None:
    write_project(tmp_path)
    client = make_client(tmp_path)
    bad = form(tmp_path) | {"queue": True, "grid": "network.dim=8,0"}
    status, result = post(client, "/new/save", bad)
    assert status == 400 and not (tmp_path / "runs").exists()
    assert result["errors"] == ["--grid network.dim=0: Input should be greater than or equal to 1 (got 0)"]
    status, result = post(client, "/new/save", form(tmp_path) | {"queue": True, "grid": "network.dim=8,16"})
    assert status == 200, result
    assert result["jobs"] == [1, 2] and len(result["runs"]) == 2  # type: ignore[arg-type]
    assert (tmp_path / "runs" / "sweeps" / f"{result['sweep']}.json").is_file()
    assert f'<option value="{result["sweep"]}">' in client.get("/compare").text
    status, compared = post(client, "/compare", {"sweep": result["sweep"], "epoch": "final"})
    assert status == 200, compared
    assert compared["runs"] == result["runs"]


def test_queue_page_without_a_queue_creates_no_database(tmp_path: Path) -> None:
    client = make_client(tmp_path)
    assert "The queue is empty." in client.get("/queue").text
    assert not (tmp_path / "runs").exists()


# ---- compare -------------------------------------------------------------------------------------


def test_compare_two_runs_writes_and_shows_the_sheet(client: TestClient, project: Path) -> None:
    first, second = run_ids(project)
    status, result = post(client, "/compare", {"runs": [first, second], "epoch": "final"})
    assert status == 200, result
    assert result["runs"] == [first, second]
    assert result["labels"] == [["network.dim=16", "network.alpha=8.0"], ["network.dim=8", "network.alpha=4.0"]]
    sheet = client.get(str(result["sheet"]))
    assert sheet.status_code == 200 and sheet.headers["content-type"] == "image/png"
    page = client.get("/compare", params={"sheet": str(result["name"])}).text
    assert f'<img class="sheet" src="{result["sheet"]}"' in page
    status, result = post(client, "/compare", {"runs": [first], "epoch": "final"})
    assert status == 400 and result["errors"] == ["compare: got 1 run; give two or more to compare"]
    status, result = post(client, "/compare", {"runs": [first, second], "epoch": "zero"})
    assert result["errors"] == ["compare: --epoch zero: give final, best or an epoch number"]


def test_run_page_shows_validation_loss_and_the_suggested_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_SD_LOG", str(HERE / "fixtures" / "logs" / "sd15_validation_split.merged.txt"))
    run_dir = train(write_project(tmp_path))
    page = make_client(tmp_path).get(f"/runs/{run_dir.name}").text
    assert "<th>validation loss</th>" in page
    assert '<polyline class="validation"' in page
    best = re.search(r'<p id="best">Suggested: epoch (\d+): ', page)
    assert best is not None
    assert f'<tr class="best"><td>epoch {best.group(1)}</td>' in page


def test_the_command_line_does_not_import_the_web_framework() -> None:
    code = (
        "import sys\nfrom click.testing import CliRunner\nfrom kohya_wrap.cli import main\n"
        "assert CliRunner().invoke(main, ['ui', '--help']).exit_code == 0\n"
        "print(sorted({'starlette', 'uvicorn', 'jinja2'} & set(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout == "[]\n"


def test_two_tabs_saving_captions_at_once_leave_whole_files_and_every_backup(client: TestClient, project: Path) -> None:
    folder = project / "5_zdm"
    old = (folder / "img2.txt").read_text()
    token = csrf_of(client)
    texts = [f"zdm, tab{n}" for n in range(8)]

    def save(text: str) -> int:
        body = {"dir": str(folder), "name": "img2.png", "caption": text}
        return client.post("/dataset/caption", json=body, headers={"X-CSRF-Token": token}).status_code

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(save, texts)) == [200] * len(texts)
    assert (folder / "img2.txt").read_text() in {f"{t}\n" for t in texts}
    saved = {p.read_text() for p in (folder / ".kohya_wrap-backup").glob("*/img2.txt")}
    assert old in saved  # the caption before the first save is kept
    assert not list(folder.glob(".img2.txt.*"))  # no temporary file left behind
    post(client, "/dataset/caption", {"dir": str(folder), "name": "img2.png", "caption": old})


def test_the_samples_grid_grows_epoch_by_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    monkeypatch.setenv("FAKE_SD_LOG", SIMPLE)
    run_dir = train(write_project(tmp_path))
    samples = run_dir / "output" / "sample"
    samples.mkdir(parents=True, exist_ok=True)
    client = make_client(tmp_path)
    for epoch in (1, 2):
        Image.new("RGB", (8, 8)).save(samples / f"e2e_lora_e{epoch:06d}_00_20260101000000_42.png")
        fragment = client.get(f"/runs/{run_dir.name}/report").text
        rows = re.findall(r'<tr data-epoch="(\d+)">', fragment)
        assert rows == [str(e) for e in range(1, epoch + 1)]
        url = f"/files/runs/{run_dir.name}/output/sample/e2e_lora_e{epoch:06d}_00_20260101000000_42.png"
        assert f'<img src="{url}" alt="epoch {epoch}, prompt 1"' in fragment
        assert client.get(url).headers["content-type"] == "image/png"
    # The live stream counts outputs, so the page knows to redraw the grid.
    stream = client.get(f"/events/runs/{run_dir.name}").text
    first = json.loads(next(line for line in stream.splitlines() if line.startswith("data: "))[6:])
    assert first["outputs"] == 2 + 2  # two LoRA files, two samples
