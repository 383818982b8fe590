"""Open a page in headless Chromium and report how each of its images loaded (the report and compare pages)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
CHECK = """<script>
window.addEventListener("load", () => {
  const images = [...document.images].map(i => [i.getAttribute("src"), i.complete, i.naturalWidth]);
  document.body.setAttribute("data-images", JSON.stringify(images));
});
</script></body>"""


def loaded_images(page: Path, tmp_path: Path) -> list[list[object]]:
    """[src, complete, naturalWidth] of each <img>, as headless Chromium loaded `page` from disk."""
    browser = next((b for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        pytest.skip(
            "!!! no Chromium found: the page is NOT checked in a real browser; install it with "
            "`apt-get install -y chromium` !!!"
        )
    # A copy with a probe script, beside the page so that its relative paths resolve the same.
    probe = page.with_name(".browser-check.html")
    probe.write_text(page.read_text("utf-8").replace("</body>", CHECK), encoding="utf-8")
    try:
        done = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                f"--user-data-dir={tmp_path / 'chromium'}",
                "--virtual-time-budget=5000",
                "--dump-dom",
                probe.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        probe.unlink()
    match = re.search(r'data-images="([^"]*)"', done.stdout)
    assert match, f"Chromium did not run the check (exit {done.returncode}): {done.stderr[-2000:]}"
    found: list[list[object]] = json.loads(match.group(1).replace("&quot;", '"'))
    return found
