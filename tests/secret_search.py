"""Searching what the service kept and said for a guardian's secrets: the tests of "no single party can
decrypt" (the remote ceremony, the custodial claim, the guardian command) look for each secret number in
every table, response body and log line, in every form it could be written in."""

from __future__ import annotations

import base64

from sqlalchemy import Engine, text

from service.db.models import Base


def leaks(haystack: str, numbers: list[int]) -> list[str]:
    """The forms (upper and lower hex, decimal, base64 of 512 bytes) of ``numbers`` found in
    ``haystack``, shortened; short forms are skipped, as they would match by chance."""
    found = []
    for x in numbers:
        forms = [format(x, "X"), format(x, "x"), str(x), base64.b64encode(x.to_bytes(512, "big")).decode()]
        for form in forms:
            if len(form) >= 16 and form in haystack:
                found.append(form[:12] + "...")
    return found


def dump(engine: Engine) -> str:
    """Every column of every row of every table, as text (bytea as hex)."""
    parts = []
    with engine.connect() as c:
        for name in Base.metadata.tables:
            parts += [str(row[0]) for row in c.execute(text(f'SELECT t::text FROM "{name}" t'))]
    return "\n".join(parts)
