"""What the job and batch routes share: documented error responses, id parameters, idempotent creation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Header, Path, Request, Response
from pydantic import BaseModel

from ..auth import Principal, current_principal
from ..context import ApiContext, get_ctx
from ..errors import ApiError, ErrorBody
from ..idempotency import KEY_PATTERN, Claim, IdempotencyStore, fingerprint

ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
JobId = Annotated[str, Path(pattern=ID_PATTERN, description="Job id")]
BatchId = Annotated[str, Path(pattern=ID_PATTERN, description="Batch id")]
IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", pattern=KEY_PATTERN,
    description="Makes a retried submission return what the first one created (per token, kept for "
                "IMGRESTORE_API_IDEMPOTENCY_TTL_SECONDS, default 24 h). Same key with a different body → 409.")]


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _error("Missing or invalid token, or no tokens configured"),
    422: _error("Invalid request"),
    503: _error("The job store is unavailable"),
}
NOT_FOUND = {404: _error("Unknown id, expired, or not visible to this token")}
SUBMIT_ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS,
    400: _error("The body could not be read (e.g. not UTF-8)"),
    403: _error("A URL lies outside the token's allow-list"),
    409: _error("This Idempotency-Key was used for a different request, or that request is still running"),
    413: _error("Request body over IMGRESTORE_API_MAX_REQUEST_BYTES"),
    429: _error("A per-token quota or a queued-job cap is reached; Retry-After says when to try again"),
}


def counted_submission(principal: Principal = Depends(current_principal),
                       ctx: ApiContext = Depends(get_ctx)) -> None:
    """The per-token submission rate (429 over IMGRESTORE_API_SUBMISSIONS_PER_MINUTE_PER_TOKEN)."""
    ctx.submission_rate.take(principal.name)


def known_query_only(request: Request) -> None:
    """Unknown query parameters are refused (422), so a typo such as ``?limt=5`` is not silently ignored."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None or not request.query_params:
        return
    allowed = _QUERY_NAMES.get(id(route))
    if allowed is None:
        allowed = _QUERY_NAMES[id(route)] = _query_names(dependant)
    unknown = sorted({name for name in request.query_params.keys() if name not in allowed})
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise ApiError(422, "validation", f"unknown query parameter(s) {', '.join(map(repr, unknown))[:200]}; "
                                          f"this endpoint takes: {known}")


_QUERY_NAMES: dict[int, set[str]] = {}


def _query_names(dependant: Any) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def create_once(store: IdempotencyStore, owner: str, key: str | None, kind: str, body: BaseModel,
                create: Callable[[], str], response: Response) -> tuple[str, bool]:
    """Runs ``create`` (which returns the new id) at most once per Idempotency-Key; (id, replayed)."""
    if key is None:
        return create(), False
    claim = store.claim(owner, key, kind, fingerprint(kind, body.model_dump_json()))
    if not isinstance(claim, Claim):
        response.headers["Idempotent-Replayed"] = "true"
        return claim, True
    try:
        created = create()
    except BaseException:
        store.release(claim)  # nothing was created: the client may retry with the same key
        raise
    store.complete(claim, created)
    return created, False
