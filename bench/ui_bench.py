"""The web app: first page load and a progress update over server-sent events, as ratios to bare Starlette.

Both apps are served by uvicorn on loopback in this process and measured in the same run, interleaved:
- page load: GET /runs (20 runs) plus its stylesheet and script, against a bare Starlette route returning "hello";
- progress update: a Step event appended to a running run's events.jsonl until the browser-side stream shows it,
  against a bare Starlette event stream that polls a file's size at the same interval and sends it on change.

usage: python bench/ui_bench.py [--rounds N] [--out bench/results/ui.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from ui_site import SIMPLE, train, write_project  # noqa: E402

from kohya_wrap.train import events as ev  # noqa: E402
from kohya_wrap.ui.server import make_app  # noqa: E402

RUNS = 20
POLL_S = 0.5  # the app's own default poll interval, used by the baseline stream too


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serve(app: Any) -> tuple[uvicorn.Server, str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return server, f"http://127.0.0.1:{port}"


def baseline_app(watched: Path) -> Starlette:
    async def hello(request: Request) -> Response:
        return PlainTextResponse("hello")

    async def stream(request: Request) -> Response:
        async def events() -> AsyncIterator[str]:
            last = -1
            while not await request.is_disconnected():
                size = watched.stat().st_size
                if size != last:
                    last = size
                    yield f"data: {size}\n\n"
                await asyncio.sleep(POLL_S)

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/hello", hello), Route("/events", stream)])


def make_runs(root: Path) -> Path:
    """RUNS finished runs (one trained with the fake sd-scripts, then copied) and one running run."""
    os.environ["FAKE_SD_LOG"] = SIMPLE
    first = train(write_project(root))
    for n in range(1, RUNS):
        shutil.copytree(first, first.with_name(f"{first.name}-{n:02d}"))
    running = first.with_name(f"{first.name}-running")
    shutil.copytree(first, running)
    record = json.loads((running / "run.json").read_text())
    (running / "run.json").write_text(json.dumps(record | {"status": "running"}))
    return running


def page_load(client: httpx.Client, base: str, ours: bool) -> float:
    start = time.perf_counter()
    if ours:
        for path in ("/runs", "/static/app.css", "/static/app.js"):
            client.get(base + path).raise_for_status()
    else:
        client.get(base + "/hello").raise_for_status()
    return time.perf_counter() - start


def stream_update(base: str, path: str, events_file: Path, step: int) -> float:
    """Seconds from appending a Step event to the stream's next message."""
    with httpx.Client(timeout=30) as client, client.stream("GET", base + path) as response:
        lines = response.iter_lines()
        next(line for line in lines if line.startswith("data: "))  # the state before the update
        line = ev.to_json(ev.Step(step=step, total=step, loss=0.5, rate=1.0, eta_s=1.0, elapsed_s=1.0), time.time())
        start = time.perf_counter()
        with events_file.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        next(line for line in lines if line.startswith("data: "))
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        running = make_runs(root)
        events_file = running / "events.jsonl"
        ours, ours_url = serve(make_app("127.0.0.1", root / "runs", root, None))
        base, base_url = serve(baseline_app(events_file))
        loads: dict[str, list[float]] = {"bare Starlette `GET /hello`": [], "`/runs` page + CSS + JS": []}
        updates: dict[str, list[float]] = {"bare Starlette stream (same poll)": [], "`/events/runs/<run>`": []}
        with httpx.Client(timeout=30) as client:
            page_load(client, ours_url, True)  # first-request imports (templates, queue) are not the page's cost
            for _ in range(args.rounds):
                loads["bare Starlette `GET /hello`"].append(page_load(client, base_url, False))
                loads["`/runs` page + CSS + JS"].append(page_load(client, ours_url, True))
        step = 1000
        for _ in range(max(3, args.rounds // 3)):
            step += 1
            updates["bare Starlette stream (same poll)"].append(stream_update(base_url, "/events", events_file, step))
            step += 1
            updates["`/events/runs/<run>`"].append(
                stream_update(ours_url, f"/events/runs/{running.name}", events_file, step)
            )
        ours.should_exit = base.should_exit = True
    lines = [
        "# Web app: page load and live progress (medians, interleaved, loopback)",
        "",
        f"Command: `python bench/ui_bench.py --rounds {args.rounds}`; {RUNS + 1} run folders; poll every {POLL_S} s.",
        "",
        "| what | median | ratio to the bare Starlette baseline |",
        "|---|---|---|",
    ]
    for table in (loads, updates):
        names = list(table)
        floor = statistics.median(table[names[0]])
        for name in names:
            median = statistics.median(table[name])
            lines.append(f"| {name} | {median * 1000:.1f} ms | {median / floor:.2f}× |")
    lines += [
        "",
        "A progress update waits for the next poll of events.jsonl; the event is appended right after a poll, so",
        "both streams take about one poll interval, and the ratio is what reading run.json and the events' tail adds.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
