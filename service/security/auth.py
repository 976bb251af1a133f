"""JWT bearer tokens (PyJWT, HMAC): who is calling, and what each role may do.

Roles: ``admin`` runs elections and sees every job; ``guardian`` is bound by its token to one election
and one guardian id, acts only as that guardian and sees only the jobs it created.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import Any

import jwt

from service.errors import Forbidden, Unauthorized
from service.security.secrets import jwt_key
from service.settings import Settings

ISSUER = "amarvote"


class Role(enum.StrEnum):
    ADMIN = "admin"
    GUARDIAN = "guardian"


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    role: Role
    election_id: int | None = None
    guardian_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN


MAX_SUBJECT = 128  # the created_by columns


def issue_token(
    settings: Settings,
    subject: str,
    role: Role | str,
    *,
    election_id: int | None = None,
    guardian_id: str | None = None,
    ttl_seconds: int = 12 * 3600,
    key: bytes | None = None,
) -> str:
    """A signed token; ``key`` is the JWT key already resolved (``jwt_key(settings)`` by default, which
    refuses settings without a JWT secret: a worker node's)."""
    role = Role(role)
    if role == Role.GUARDIAN and (election_id is None or guardian_id is None):
        raise ValueError("a guardian token names its election and guardian")
    if not 0 < len(subject) <= MAX_SUBJECT or "\x00" in subject:
        raise ValueError(f"a token's subject is 1 to {MAX_SUBJECT} characters without NUL")
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": subject,
        "role": role.value,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    if election_id is not None:
        claims["election_id"] = int(election_id)
    if guardian_id is not None:
        claims["guardian_id"] = guardian_id
    return jwt.encode(claims, key or jwt_key(settings), algorithm=settings.jwt_algorithm)


def decode_token(settings: Settings, token: str, *, key: bytes | None = None) -> Principal:
    """The caller a token names; ``key`` as for ``issue_token`` (the API resolves it once at start)."""
    key = key or jwt_key(settings)
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[settings.jwt_algorithm],  # pinned: never trust the token's own alg header
            issuer=ISSUER,
            options={"require": ["exp", "sub", "iss"]},
        )
        role = Role(str(claims.get("role")))
    except (jwt.PyJWTError, ValueError) as exc:
        # PyJWT's message says which check failed (expired, bad signature), never the key.
        raise Unauthorized(f"invalid token: {exc}") from exc
    subject = str(claims["sub"])
    if not 0 < len(subject) <= MAX_SUBJECT or "\x00" in subject:
        # The subject is written as the creator of jobs and elections (VARCHAR(128)).
        raise Unauthorized(f"invalid token: the subject must be 1 to {MAX_SUBJECT} characters without NUL")
    p = Principal(subject, role, claims.get("election_id"), claims.get("guardian_id"))
    if role == Role.GUARDIAN and (p.election_id is None or p.guardian_id is None):
        raise Unauthorized("invalid token: a guardian token must name its election and guardian")
    return p


def require_admin(p: Principal) -> None:
    if not p.is_admin:
        raise Forbidden("this action needs the admin role")


def require_acting_guardian(p: Principal, election_id: int, guardian_id: str) -> None:
    """An admin may act for any guardian; a guardian only as itself, in its own election."""
    if p.is_admin:
        return
    if p.election_id != election_id or p.guardian_id != guardian_id:
        raise Forbidden(f"this token may act only as guardian {p.guardian_id!r} of election {p.election_id}")


def require_own_guardian(p: Principal, election_id: int, guardian_id: str) -> None:
    """Only the guardian itself, with its own token: in a guardian-held ceremony nobody else, an admin
    included, may act for it."""
    if p.is_admin:
        raise Forbidden(f"only guardian {guardian_id!r}'s own token may do this, not an admin's")
    if p.election_id != election_id or p.guardian_id != guardian_id:
        raise Forbidden(f"this token may act only as guardian {p.guardian_id!r} of election {p.election_id}")


def require_election_access(p: Principal, election_id: int) -> None:
    if not p.is_admin and p.election_id != election_id:
        raise Forbidden(f"this token is for election {p.election_id}, not {election_id}")


def can_see_job(p: Principal, created_by: str | None) -> bool:
    return p.is_admin or (created_by is not None and created_by == p.subject)
