"""Logging of the ``amarvote`` command: our own events at INFO, libraries' chatter only when asked.

Our loggers (``cli``, ``bridge``, ``service``, ``compute``) log at ``AMARVOTE_LOG_LEVEL`` (INFO): chunks
done, failed and retried, outages, stuck jobs. Libraries (pika's connection workflow, Ray's start-up
notes and its token-authentication warning, uvicorn's access log, httpx) log at WARNING, and the Ray
token-authentication warning not at all, unless the level is DEBUG or ``--debug`` is given.
"""

from __future__ import annotations

import logging
import os

OWN = ("cli", "bridge", "service", "compute")
LIBRARIES = (
    "pika",
    "ray",
    "uvicorn",
    "uvicorn.access",
    "uvicorn.error",
    "httpx",
    "httpcore",
    "filelock",
    "asyncio",
)
# Ray 2.60 warns on every local start that token authentication is off; the local Ray of the embedded
# default listens on 127.0.0.1 only (bridge.ray_runtime), and a cluster's operator sets RAY_AUTH_MODE.
RAY_TOKEN_WARNING = "ray._private.authentication.authentication_token_setup"
FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
_state = {"debug": False}


def set_debug(on: bool) -> None:
    _state["debug"] = on


def debug_requested() -> bool:
    return _state["debug"]


def level_of(name: str | None, debug: bool = False) -> int:
    if debug:
        return logging.DEBUG
    value = logging.getLevelName((name or "INFO").strip().upper())
    return value if isinstance(value, int) else logging.INFO


def configure(level: int, *, rich: bool = False) -> int:
    """Set the levels (idempotent); a handler on the root logger when it has none: rich's, drawn above
    progress bars, for the interactive commands; a plain timestamped one for the servers."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_amarvote", False)]:
        root.removeHandler(old)
    if not root.handlers:
        if rich:
            from rich.logging import RichHandler

            from cli.console import console

            handler: logging.Handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
            handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        else:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter(FORMAT))
        handler._amarvote = True  # type: ignore[attr-defined]  # ours: replaced by the next configure
        root.addHandler(handler)
    chatty = level <= logging.DEBUG
    root.setLevel(level if chatty else logging.WARNING)
    for name in OWN:
        logging.getLogger(name).setLevel(level)
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(level if chatty else logging.WARNING)
    logging.getLogger(RAY_TOKEN_WARNING).setLevel(level if chatty else logging.ERROR)
    # ray.init(logging_level=...) resets the "ray" logger: bridge.ray_runtime reads this to keep ours.
    os.environ["AMARVOTE_LIBRARY_LOG_LEVEL"] = logging.getLevelName(level if chatty else logging.WARNING)
    return level
