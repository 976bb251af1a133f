"""The one rule for ids that become names: file names in an election record, zip entries, URL paths.

A ballot, guardian or device id comes from outside (a voter's device, an imported record, a request)
and is joined into ``submitted_ballots/submitted_ballot_<id>.json``, ``guardians/guardian_<id>.json``,
``.../ballots/<id>/cast``. An id with ``/``, ``\\``, ``..`` or a control character would name another
place (a file outside ``--out``, a zip entry a careless extractor writes anywhere, a folder the verifier
never reads, a URL no route matches), so every door refuses it with this one rule:

    ``SAFE_ID``: a letter or digit, then letters, digits, ``.``, ``_`` and ``-``; nothing else.

No leading ``.`` (no hidden file, no ``..``), no separator, no space, no control character, ASCII only
(the same name on every file system and in every URL). Every id the reference package makes ("1" .. "n"
for guardians, "ballot-000", "some-external-id-string-123" for ballots, integer device ids) and every id
this service makes ("guardian-1", "ballot-0000001") fits it.

The API declares ``SAFE_ID`` as its types' pattern (``service/api/types.py``), so OpenAPI shows it and a
refusal names it; everything else calls ``check_id``. The record's own reads and writes check their paths
as well (``compute/record.py``), so a name that slipped past this rule still cannot leave its folder.
"""

from __future__ import annotations

import re

# ECMA-262 and Rust regex syntax alike (pydantic and OpenAPI use the pattern as written); ``check_id``
# matches it with ``fullmatch``, so Python's ``$`` cannot accept a trailing newline.
SAFE_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
RULE = "a letter or digit, then only letters, digits, '.', '_' or '-' (pattern " + SAFE_ID + ")"

# The record's longest name of a ballot, ``submitted_ballot_<id>.json``, must fit a file system's 255 bytes
# (17 + 200 + 5); ballot.object_id is VARCHAR(256), so the column holds any id this allows.
BALLOT_ID_MAX = 200
# A guardian acts under the token subject "guardian:<election id>:<guardian id>", which jobs keep in
# created_by (VARCHAR(128)): 9 + 19 digits + 1 leave 99 characters; 96 keeps a margin.
GUARDIAN_ID_MAX = 96
DEVICE_ID_MAX = 256

_SAFE = re.compile(SAFE_ID)


class UnsafeId(ValueError):
    """An id that may not become a name; the message names the field and the rule."""


def is_safe_id(value: object, max_length: int = BALLOT_ID_MAX) -> bool:
    return isinstance(value, str) and 0 < len(value) <= max_length and _SAFE.fullmatch(value) is not None


def check_id(value: object, field: str, max_length: int = BALLOT_ID_MAX) -> str:
    """``value`` when it is a safe id of at most ``max_length`` characters; ``UnsafeId`` naming ``field``
    and the rule otherwise (the value itself is shown only shortened and escaped: it is untrusted)."""
    if is_safe_id(value, max_length):
        assert isinstance(value, str)
        return value
    if not isinstance(value, str):
        raise UnsafeId(f"{field} must be a string, got {type(value).__name__}")
    shown = repr(value[:40]) + ("..." if len(value) > 40 else "")
    raise UnsafeId(f"{field} {shown} is not a safe id: 1 to {max_length} characters, {RULE}")
