"""The guardian's HTTP client: httpx with its bearer token, one message naming the problem on a failure."""

from __future__ import annotations

import time
from typing import Any

import httpx


class GuardianError(Exception):
    """A refusal or failure of ``amarvote guardian``: its message is what the guardian reads (exit 1)."""


class ApiError(GuardianError):
    def __init__(self, method: str, path: str, status: int, detail: str) -> None:
        super().__init__(f"{method} {path}: the API answered {status}: {detail}")
        self.status, self.detail = status, detail


def _detail(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text.strip()[:300] or r.reason_phrase
    detail = body.get("detail") if isinstance(body, dict) else body
    if isinstance(detail, list):  # request validation: [{loc, msg}]
        return "; ".join(f"{'.'.join(map(str, e.get('loc', [])))}: {e.get('msg')}" for e in detail[:5])
    return str(detail)


class Api:
    """The amarvote API as one guardian sees it (its own token on every request)."""

    def __init__(self, url: str, token: str, *, timeout: float = 120.0, retries: int = 5) -> None:
        self.url = url.rstrip("/")
        self.retries = retries
        self.http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            follow_redirects=False,
        )

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, **kw: Any) -> Any:
        """The JSON of a 2xx answer; an unreachable API or a 503 is tried again a few times."""
        for attempt in range(self.retries + 1):
            try:
                r = self.http.request(method, path, **kw)
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise GuardianError(
                        f"cannot reach the API at {self.url} ({method} {path}): {type(exc).__name__}: {exc}"
                    ) from exc
                time.sleep(min(2**attempt * 0.5, 5))
                continue
            if r.status_code == 503 and attempt < self.retries:
                time.sleep(min(float(r.headers.get("Retry-After") or 1), 5))
                continue
            if r.status_code >= 400:
                raise ApiError(method, path, r.status_code, _detail(r))
            return r.json() if r.content else None
        raise AssertionError("unreachable")

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params=params or None)
