"""Bearer tokens and their allow-lists.

``IMGRESTORE_API_TOKENS`` is JSON: ``{"<token>": {"name": "ops", "allow": ["s3://scans/", "s3://archive/in/"]}}``,
optionally with ``"callback_hosts": ["hooks.example.com"]``: the only hosts that token's callbacks may name.
Only SHA-256 digests of the tokens are kept after parsing, every request is compared against all of them in
constant time, and a token never appears in a log line or an error message (problems name the token's ``name``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator

from ..errors import ConfigurationError
from .errors import ApiError
from .urls import BUCKET, s3_parts

MIN_TOKEN_LENGTH = 16
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="imgrestore"'}


class TokenGrant(BaseModel):
    """What one token may do: who it is (recorded as the owner of its jobs) and where it may read and write."""

    model_config = {"extra": "forbid"}

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    allow: list[str] = Field(default_factory=list, description="s3://bucket/ or s3://bucket/prefix entries")
    callback_hosts: list[str] | None = Field(
        None, description="Host names (or IPv4 addresses) this token's callback_url may name, matched exactly; "
        "absent: any host the egress rules allow")

    @field_validator("callback_hosts")
    @classmethod
    def _host_names(cls, hosts: list[str] | None) -> list[str] | None:
        if hosts is None:
            return None
        for host in hosts:
            if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?", host):
                raise ValueError(f"callback_hosts entry {host!r} is not a host name (no scheme, port or path)")
        return [host.lower() for host in hosts]

    @field_validator("allow")
    @classmethod
    def _s3_prefixes(cls, entries: list[str]) -> list[str]:
        out = []
        for entry in entries:
            parts = s3_parts(entry)
            if parts is None or not re.fullmatch(BUCKET, parts[0]):
                raise ValueError(f"allow entry {entry!r} is not an s3://bucket/ or s3://bucket/prefix URL")
            bucket, key = parts
            if any(segment in (".", "..") for segment in key.split("/")):
                raise ValueError(f"allow entry {entry!r} has '.' or '..' segments")
            out.append(f"s3://{bucket}/{key}")  # a bare bucket means all of it: s3://b → s3://b/
        return out


@dataclass(frozen=True)
class Principal:
    """The caller, once its token matched."""

    name: str
    allow: tuple[str, ...]
    callback_hosts: tuple[str, ...] | None = None  # None: any host the egress rules allow

    def allows(self, url: str) -> bool:
        """Plain prefix match, as S3 policies do (``s3://b/in`` also covers ``s3://b/inbox/…``; end entries with /)."""
        return any(url.startswith(entry) for entry in self.allow)


class TokenTable:
    def __init__(self, grants: dict[bytes, Principal]) -> None:
        self._grants = grants

    def __bool__(self) -> bool:
        return bool(self._grants)

    @property
    def principals(self) -> list[Principal]:
        return list(self._grants.values())

    def match(self, presented: str) -> Principal | None:
        """Compares against every token (no early exit), digest to digest, so timing reveals nothing."""
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        found = None
        for known, principal in self._grants.items():
            if hmac.compare_digest(known, digest):
                found = principal
        return found


def parse_tokens(raw: SecretStr | None) -> TokenTable:
    """Parses the setting; a malformed one is a ConfigurationError whose message never contains a token."""
    if raw is None or not raw.get_secret_value().strip():
        return TokenTable({})
    try:
        data = json.loads(raw.get_secret_value())
    except ValueError as exc:
        raise ConfigurationError(f"IMGRESTORE_API_TOKENS is not valid JSON (at position {exc.pos})") from None
    if not isinstance(data, dict):
        raise ConfigurationError('IMGRESTORE_API_TOKENS must be a JSON object: '
                                 '{"<token>": {"name": ..., "allow": [...]}}')
    grants: dict[bytes, Principal] = {}
    names: set[str] = set()
    for index, (token, spec) in enumerate(data.items(), 1):
        try:
            grant = TokenGrant.model_validate(spec)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
            raise ConfigurationError(f"IMGRESTORE_API_TOKENS entry #{index}: {problems}") from None
        if len(token) < MIN_TOKEN_LENGTH:
            raise ConfigurationError(f"IMGRESTORE_API_TOKENS: the token of {grant.name!r} is shorter than "
                                     f"{MIN_TOKEN_LENGTH} characters; generate one with "
                                     "python -c 'import secrets; print(secrets.token_urlsafe(32))'")
        if grant.name in names:
            raise ConfigurationError(f"IMGRESTORE_API_TOKENS: two tokens are named {grant.name!r}; names identify "
                                     "the owners of jobs and must be unique")
        names.add(grant.name)
        hosts = None if grant.callback_hosts is None else tuple(grant.callback_hosts)
        grants[hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()] = Principal(grant.name,
                                                                                            tuple(grant.allow), hosts)
    return TokenTable(grants)


bearer = HTTPBearer(auto_error=False, scheme_name="bearerAuth",
                    description="A token from IMGRESTORE_API_TOKENS: `Authorization: Bearer <token>`.")


def current_principal(request: Request,
                      credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
    tokens: TokenTable = request.app.state.ctx.tokens
    if not tokens:
        raise ApiError(401, "unauthorized", "the API has no tokens configured: set IMGRESTORE_API_TOKENS "
                       "(see services/api/README.md)", _CHALLENGE)
    if credentials is None:
        raise ApiError(401, "unauthorized", "missing bearer token: send 'Authorization: Bearer <token>'", _CHALLENGE)
    principal = tokens.match(credentials.credentials)
    if principal is None:
        raise ApiError(401, "unauthorized", "invalid token", _CHALLENGE)
    request.state.principal = principal.name  # the access log records who, never the token
    return principal


def require_allowed(principal: Principal, url: str, what: str) -> None:
    if not principal.allows(url):
        raise ApiError(403, "forbidden", f"{what} {url} is outside the prefixes token {principal.name!r} may use")


def require_callback_host(principal: Principal, url: str) -> None:
    """A token with ``callback_hosts`` may only name those hosts in a callback_url (403 otherwise)."""
    if principal.callback_hosts is None:
        return
    host = (urlsplit(url).hostname or "").lower()
    if host not in principal.callback_hosts:
        raise ApiError(403, "forbidden", f"callback_url host {host!r} is not among the callback hosts token "
                       f"{principal.name!r} may use")
