"""What the long CLI commands share: progress bars, and the settings of a self-contained run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cli.console import console
from cli.pipeline import Progress as Report
from service.settings import Settings


def run_settings(kind: str) -> Settings:
    """The configured settings; on the embedded default with no data directory chosen, a fresh one (and
    so a fresh SQLite) per run, so runs never meet."""
    settings = Settings()
    if settings.database_url is None and "data_dir" not in settings.model_fields_set:
        run_id = time.strftime("%Y%m%d-%H%M%S")
        settings = settings.model_copy(update={"data_dir": Path("amarvote-data") / f"{kind}-{run_id}"})
    return settings


def progress_bars() -> Progress:
    return Progress(
        TextColumn("{task.description:<16}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def reporter(bar: Progress) -> Report:
    """A pipeline progress callback drawing one bar per label."""
    tasks: dict[str, Any] = {}

    def report(label: str, done: int, total: int) -> None:
        if label not in tasks:
            tasks[label] = bar.add_task(label, total=total or None)
        bar.update(tasks[label], completed=done, total=total or None)

    return report


def mode(settings: Settings) -> str:
    ray = f"the Ray cluster at {settings.ray_address}" if settings.ray_address else "a local Ray"
    if settings.embedded:
        db = "SQLite" if settings.database_url is None else "the configured database"
        return f"embedded ({db}, outbox, {ray})"
    return f"services (RabbitMQ bridge, {ray})"
