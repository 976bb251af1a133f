"""The one rich console every command draws on (progress bars, messages, the log handler): a module of its
own so that ``amarvote guardian`` can use it without loading the service's commands."""

from __future__ import annotations

from rich.console import Console

console = Console()
