"""Who may call the server: API keys, and dashboard sessions derived from them.

    export ADHERE_API_KEYS=key-for-alice,key-for-bob        # or, in adhere.yaml:
    serve: {api_key_hashes: [<sha256 hex of each key>]}     # python -c "import hashlib; ..." prints one

Keys never sit in adhere.yaml: it holds their SHA-256 digests, and `$ADHERE_API_KEYS` (the
variable `serve.api_keys_env` names) may add keys, hashed on start. A presented key is hashed
and compared with *every* accepted digest by `hmac.compare_digest`, without stopping at a
match, so the time a check takes says nothing about how close a guess was or which key matched.

A browser cannot send `Authorization` headers when it opens a page, so the dashboard signs in
once with a key and gets a cookie holding a session token: `<expiry>.<HMAC(secret, digest|expiry)>`
under a secret drawn at start. The token proves knowledge of a key without containing it, expires
after `serve.session_hours`, and dies when the server restarts. Cookies are accepted only on the
dashboard's read-only GETs, so a forged cross-site request can change nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from adhere.serve.config import ServeConfig

SESSION_COOKIE = "adhere_session"


def key_digest(key: str) -> str:
    """The SHA-256 hex digest of an API key, as `serve.api_key_hashes` lists them."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass
class Keys:
    """The accepted key digests; `enabled=False` (``--insecure``) lets every request in."""

    digests: list[str]
    enabled: bool = True
    session_s: float = 12 * 3600.0
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)

    @classmethod
    def from_config(cls, cfg: ServeConfig, environ: Mapping[str, str], *, insecure: bool = False) -> Keys:
        """Digests from the config plus the keys in the environment variable it names."""
        from_env = [k.strip() for k in environ.get(cfg.api_keys_env, "").split(",") if k.strip()]
        digests = list(dict.fromkeys([*cfg.api_key_hashes, *(key_digest(k) for k in from_env)]))
        return cls(digests, enabled=not insecure, session_s=cfg.session_hours * 3600)

    def check_key(self, key: str | None) -> str | None:
        """The digest `key` matches, or None; constant time in the key and over all digests."""
        if not self.enabled:
            return "insecure"
        if not key:
            return None
        presented = key_digest(key)
        matched = None
        for digest in self.digests:  # no early exit: every digest is compared every time
            if hmac.compare_digest(presented, digest):
                matched = digest
        return matched

    def check_bearer(self, authorization: str | None) -> str | None:
        """The digest an `Authorization: Bearer <key>` header matches, or None."""
        scheme, _, key = (authorization or "").strip().partition(" ")
        if not self.enabled:
            return "insecure"
        return self.check_key(key.strip()) if scheme.lower() == "bearer" else None

    def session_for(self, digest: str, now: float | None = None) -> str:
        """A session token for the key with this digest, valid for `session_s` seconds."""
        expires = int((time.time() if now is None else now) + self.session_s)
        return f"{expires}.{self._sign(digest, expires)}"

    def check_session(self, token: str | None, now: float | None = None) -> bool:
        """Whether `token` came from `session_for` with an accepted digest and has not expired."""
        if not self.enabled:
            return True
        expires_text, _, signature = (token or "").partition(".")
        if not expires_text.isdigit() or int(expires_text) < (time.time() if now is None else now):
            return False
        ok = False
        for digest in self.digests:
            ok |= hmac.compare_digest(signature, self._sign(digest, int(expires_text)))
        return ok

    def _sign(self, digest: str, expires: int) -> str:
        return hmac.new(self.secret, f"{digest}|{expires}".encode(), hashlib.sha256).hexdigest()
