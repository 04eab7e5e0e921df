"""``autoft report ID [--open]``: a signed link to a job's HTML report, printed and opened in a browser."""

from __future__ import annotations

import webbrowser
from typing import Annotated

import typer

from autoft_service.cli_service import DEFAULT_URL, ApiKey, JobId, Url, _call, console, out


def report(
    job_id: JobId,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    open_it: Annotated[
        bool, typer.Option("--open", help="Open the report in the default web browser.")
    ] = False,
) -> None:
    """Print a short-lived signed link to a job's HTML report (no API key needed to open it)."""
    link = _call(url, api_key, lambda c: c.report_link(job_id))
    out.print(link.url, soft_wrap=True)
    console.print(f"valid until {link.expires_at:%Y-%m-%d %H:%M:%S %Z}")
    if open_it and not webbrowser.open(link.url):
        console.print("[yellow]no browser could be started: open the link above[/yellow]")
