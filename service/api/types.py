"""The input types every route and body shares, bounded as the columns that will hold them
(``service/db/models.py``), so bad input is refused with 422 before it reaches the database.

PostgreSQL stores no NUL character in text or JSONB, and refuses numbers beyond BIGINT; a value the
column cannot hold must be refused here, not overflow into a 500 (or, for a guardian id, into a token
subject that ``election_job.created_by`` cannot hold, so that guardian could never act).
"""

from __future__ import annotations

from typing import Annotated, Any

from annotated_types import Gt, Lt
from pydantic import BaseModel, ConfigDict, StringConstraints

# Any character but NUL (the whole string, not a prefix: ``$`` alone would let "\n\0" through).
NO_NUL = r"^[^\x00]*$"

BIGINT_MAX = 2**63 - 1

Id = Annotated[int, Gt(0), Lt(BIGINT_MAX + 1)]
"""A row id (``BIGINT``): 0 < id < 2^63, in bodies, paths and queries."""


# A guardian acts under the token subject "guardian:<election id>:<guardian id>", which jobs keep in
# created_by (VARCHAR(128)): 9 + 19 digits + 1 leave 99 characters; 96 keeps a margin.
GUARDIAN_ID_MAX = 96
GuardianId = Annotated[str, StringConstraints(min_length=1, max_length=GUARDIAN_ID_MAX, pattern=NO_NUL)]
BallotId = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=NO_NUL)]  # ballot.object_id
ElectionName = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=NO_NUL)]
# Candidate and party names end up in the manifest (JSONB) and its object ids.
Label = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=NO_NUL)]
# Passphrases are only hashed, never stored; the bound keeps argon2's input (and the body) sane.
PASSPHRASE_MAX = 1024


class BallotJson(BaseModel):
    """A ballot in the reference's JSON: its ``object_id`` checked here, the rest by the ballot parser."""

    model_config = ConfigDict(extra="allow")

    object_id: BallotId

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="python")
