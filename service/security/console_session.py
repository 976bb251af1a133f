"""The operator console's session cookie and its CSRF token.

An admin pastes a token once on the login page; the console then holds a session cookie instead:
``base64url(JSON {sub, exp, nonce}) "." base64url(HMAC-SHA256)``, signed with a key of its own derived
from the JWT key (``derive_subkey(jwt_key, "console-session")``: only API replicas hold it, and a console
signature is never a valid token or escrow key). The cookie is ``HttpOnly`` (no script reads it),
``SameSite=Strict`` (no other site's page sends it), ``Secure`` over https, and short-lived.

Every action (a POST) also carries a CSRF token, a second HMAC of the session's random nonce under
another derived key, sent as the ``X-CSRF-Token`` header or the ``csrf_token`` form field and compared in
constant time. The page holds it; another origin's page can neither read it nor, with SameSite=Strict,
send the cookie: both defences must fail for a forged action to pass.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from service.errors import Forbidden, Unauthorized
from service.security.auth import Principal, Role, require_admin
from service.security.sealing import derive_subkey

COOKIE = "amarvote_console"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    subject: str
    expires: int  # unix seconds
    nonce: str


class ConsoleKeys:
    """The two keys of the console, derived once from the API's JWT key."""

    def __init__(self, jwt_key: bytes) -> None:
        self._sign = derive_subkey(jwt_key, "console-session")
        self._csrf = derive_subkey(jwt_key, "console-csrf")

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._sign, payload.encode("ascii"), hashlib.sha256).digest())

    def issue(self, principal: Principal, token_expires: int | None, minutes: int) -> tuple[str, int]:
        """A session cookie value for an admin, and its lifetime in seconds (never past the token's own
        expiry). A guardian's token is refused (403)."""
        require_admin(principal)
        now = int(time.time())
        expires = now + 60 * minutes
        if token_expires is not None:
            expires = min(expires, int(token_expires))
        if expires <= now:
            raise Unauthorized("the token has expired")
        body = {"sub": principal.subject, "exp": expires, "nonce": secrets.token_urlsafe(16)}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode("utf-8"))
        return f"{payload}.{self._mac(payload)}", expires - now

    def read(self, cookie: str | None) -> ConsoleSession:
        """The session a cookie holds; Unauthorized when absent, forged, malformed or expired."""
        if not cookie or cookie.count(".") != 1:
            raise Unauthorized("no console session")
        payload, mac = cookie.split(".")
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise Unauthorized("invalid console session")
        try:
            body = json.loads(_unb64(payload))
            session = ConsoleSession(str(body["sub"]), int(body["exp"]), str(body["nonce"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise Unauthorized("invalid console session") from exc
        if session.expires <= time.time():
            raise Unauthorized("the console session has expired: log in again")
        return session

    def principal(self, session: ConsoleSession) -> Principal:
        return Principal(session.subject, Role.ADMIN)

    def csrf_token(self, session: ConsoleSession) -> str:
        return _b64(hmac.new(self._csrf, session.nonce.encode("ascii"), hashlib.sha256).digest())

    def check_csrf(self, session: ConsoleSession, sent: str | None) -> None:
        if not sent or not hmac.compare_digest(sent.encode("utf-8"), self.csrf_token(session).encode()):
            raise Forbidden("missing or wrong CSRF token: reload the page and try again")
