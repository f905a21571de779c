"""Where admin errors become responses: one middleware, RFC 9457 problem+json for everything
except the plain `401 Unauthorized` of the token check. Also request ids and body parsing."""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
import pydantic
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from gateway.errors import ProblemError, StoreError, ValidationError
from gateway.http.wire import REASONS, is_request_id

log = logging.getLogger("gateway.admin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=pydantic.BaseModel)

REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)
API_NAME: web.AppKey[str] = web.AppKey("api_name", str)  # "admin" or "self-service", for 404s
# A JSON body another door has already built (the console's forms): parse_body validates it
# instead of reading the request's own body.
JSON_BODY: web.RequestKey[bytes] = web.RequestKey("json_body", bytes)
PROBLEM_JSON = "application/problem+json"


def request_id(request: web.Request) -> str:
    return request[REQUEST_ID]


def problem(
    request: web.Request,
    status: int,
    detail: str,
    *,
    title: str | None = None,
    type: str = "about:blank",
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    doc: dict[str, Any] = {
        "type": type,
        "title": title or REASONS.get(status, b"Error").decode(),
        "status": status,
        "detail": detail,
        "instance": request.path,
        "request_id": request.get(REQUEST_ID, ""),
    }
    if errors is not None:
        doc["errors"] = errors
    return web.Response(
        status=status, body=orjson.dumps(doc), content_type=PROBLEM_JSON, headers=headers
    )


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


def unauthorized() -> web.Response:
    return web.Response(
        status=401,
        body=b"Unauthorized",
        headers={"Content-Type": "text/plain", "WWW-Authenticate": "Bearer"},
    )


@web.middleware
async def problems_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = request.get(REQUEST_ID)  # the data plane's door has already chosen it
    if rid is None:
        given = request.headers.get("X-Request-Id", "")
        rid = (
            given
            if given and is_request_id(given.encode("latin-1", "replace"))
            else os.urandom(16).hex()
        )
        request[REQUEST_ID] = rid
    try:
        response = await handler(request)
    except ProblemError as exc:
        response = problem(
            request, exc.status, exc.detail, title=exc.title, type=exc.type, errors=exc.errors
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        detail = {
            404: f"No {request.app.get(API_NAME, 'admin')} route matches {request.path}.",
            405: f"{request.method} is not allowed on {request.path}.",
            413: "The request body is too large.",
        }.get(exc.status, exc.reason)
        response = problem(request, exc.status, detail, headers=headers)
    except RequestPayloadError as exc:
        log.warning("admin request body could not be read (%s)", type(exc).__name__)
        response = problem(
            request, 400, "The request body could not be read (its encoding); nothing was changed."
        )
        response.force_close()
    except StoreError as exc:
        log.error("store error on %s %s: %s", request.method, request.path, exc)
        response = problem(
            request, 503, "The key store is unavailable; nothing was changed. Retry later."
        )
    except Exception:
        log.exception("admin request %s %s failed", request.method, request.path)
        response = problem(request, 500, "Internal error; nothing about it is exposed here.")
    response.headers["X-Request-Id"] = rid
    return response


def validation_errors(exc: pydantic.ValidationError) -> list[dict[str, str]]:
    out = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        field = ".".join(loc)
        kind = err["type"]
        if kind == "extra_forbidden":
            message = "unknown field"
        elif kind == "missing":
            message = "is required"
        elif kind == "json_invalid":
            message = "malformed JSON"
        elif kind in ("model_type", "model_attributes_type"):
            message = "body must be a JSON object"
        else:
            message = err["msg"]
            if message.startswith("Value error, "):
                message = message[len("Value error, ") :]
        out.append({"field": field, "message": message})
    return out


async def parse_body(request: web.Request, model: type[M]) -> tuple[M, set[str]]:
    """The validated body, plus the fields the client actually sent (null differs from absent)."""
    given = request.get(JSON_BODY)
    if given is not None:
        return validate_json(given, model)
    ctype = request.content_type
    acceptable = ctype in ("application/json", "application/octet-stream", "") or ctype.endswith(
        "+json"
    )
    if request.body_exists and not acceptable:
        raise ProblemError(
            "Send the body as application/json.", status=415, title="Unsupported Media Type"
        )
    return validate_json(await request.read(), model)


def validate_json(raw: bytes, model: type[M]) -> tuple[M, set[str]]:
    """A JSON object body validated by `model`, plus the field names present in it."""
    if not raw.strip():
        raise ValidationError([{"field": "", "message": "a JSON object body is required"}])
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValidationError(
            [{"field": "", "message": "malformed JSON"}], detail="The body is not valid JSON."
        ) from None
    if not isinstance(data, dict):
        raise ValidationError([{"field": "", "message": "body must be a JSON object"}])
    try:
        body = model.model_validate_json(raw)
    except pydantic.ValidationError as exc:
        raise ValidationError(validation_errors(exc)) from None
    return body, set(data)
