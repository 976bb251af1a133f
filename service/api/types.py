"""The input types every route and body shares, bounded as the columns that will hold them
(``service/db/models.py``), so bad input is refused with 422 before it reaches the database.

PostgreSQL stores no NUL character in text or JSONB, and refuses numbers beyond BIGINT; a value the
column cannot hold must be refused here, not overflow into a 500 (or, for a guardian id, into a token
subject that ``election_job.created_by`` cannot hold, so that guardian could never act). An id that
becomes a name follows ``compute.ids.SAFE_ID``.
"""

from __future__ import annotations

from typing import Annotated, Any

from annotated_types import Gt, Lt
from pydantic import BaseModel, ConfigDict, StringConstraints

from compute.ids import BALLOT_ID_MAX, GUARDIAN_ID_MAX, SAFE_ID

# Any character but NUL (the whole string, not a prefix: ``$`` alone would let "\n\0" through).
NO_NUL = r"^[^\x00]*$"

BIGINT_MAX = 2**63 - 1

Id = Annotated[int, Gt(0), Lt(BIGINT_MAX + 1)]
"""A row id (``BIGINT``): 0 < id < 2^63, in bodies, paths and queries."""


# Ballot and guardian ids become file names in the record and parts of URLs: compute/ids.py's one rule
# (which excludes NUL too), declared as the pattern so OpenAPI shows it and a refusal names it. A guardian
# id's bound keeps its token subject within created_by (compute/ids.py says why 96).
GuardianId = Annotated[str, StringConstraints(min_length=1, max_length=GUARDIAN_ID_MAX, pattern=SAFE_ID)]
BallotId = Annotated[str, StringConstraints(min_length=1, max_length=BALLOT_ID_MAX, pattern=SAFE_ID)]
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
