"""The `ui` command: serve the local web app."""

from __future__ import annotations

from pathlib import Path

import click

from kohya_wrap.cli.common import main


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (others need --token).")
@click.option("--port", default=7860, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--runs-dir",
    type=click.Path(path_type=Path),
    default=Path("runs"),
    show_default=True,
    help="Runs folder to show (and whose queue to use).",
)
@click.option("--open", "open_browser", is_flag=True, help="Open the app in the default browser.")
@click.option("--token", help="Secret every request must carry; required off 127.0.0.1 (or set KOHYA_WRAP_UI_TOKEN).")
def ui(host: str, port: int, runs_dir: Path, open_browser: bool, token: str | None) -> None:
    """Serve the web app: runs with live progress, new runs, datasets, the queue and comparisons."""
    from kohya_wrap.ui.security import bind_token
    from kohya_wrap.ui.server import app_url, require_extra, serve

    require_extra()
    url = app_url(host, port, bind_token(host, token))
    click.echo(f"kohya_wrap ui: {url}  (runs: {runs_dir.resolve()}; new configs are saved in {Path.cwd()})")
    serve(host, port, runs_dir, Path.cwd(), token, open_browser)
