"""The OpenAPI 3.1 document, generated from the route table and the pydantic models."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from gateway.admin.params import Param
from gateway.admin.routes import Route
from gateway.admin.schemas import ProblemOut

REF = "#/components/schemas/{model}"


@dataclass(frozen=True, slots=True)
class ApiInfo:
    """What tells one door of the API from the other in its document."""

    title: str
    description: str
    scheme: str  # the name of the bearer security scheme
    unauthorized: str  # what a 401 means
    body_limit: str  # what a 413 means


ADMIN = ApiInfo(
    title="Gateway admin API",
    description="The gateway's admin port. Accounts; their API keys, with each key's signing"
    " secret and webhook settings; callback origins, each account's allow-list for callback"
    " URLs; the portal, one-time links into the customer portal for an account's own people;"
    " webhooks, events the upstream raises and the outbox of deliveries with their attempts and"
    " retries; the audit trail; and operations: liveness, Prometheus metrics, this document and"
    " that of the self-service key API on the data plane. Errors are application/problem+json"
    " (RFC 9457), except the plain-text 401 of the token check.",
    scheme="adminToken",
    unauthorized="Missing or wrong admin token",
    body_limit="Body larger than 1 MiB",
)


def _param_schema(p: Param) -> dict[str, Any]:
    if p.kind == "integer":
        schema: dict[str, Any] = {"type": "integer", "minimum": 1}
        if p.name == "limit":
            schema["maximum"] = 500
        return schema
    if p.kind == "boolean":
        return {"type": "boolean"}
    if p.kind == "date-time":
        return {"type": "string", "format": "date-time"}
    schema = {"type": "string", "minLength": 1}
    if p.enum:
        schema["enum"] = list(p.enum)
    return schema


API_VERSION = "v1"
# Set by gateway/fleet.py's middleware on any answer whose request changed the change log.
PROPAGATION_HEADER: dict[str, Any] = {
    "description": (
        "PostgreSQL fleets only, on an answer whose request changed an account, a key or a"
        " callback origin: how many of the fleet's data-plane workers had applied the change"
        " when the answer was sent (it waits up to `store.propagation_timeout`) out of how"
        " many are live (`unknown` when that could not be read), and the change-log position"
    ),
    "schema": {
        "type": "string",
        "pattern": r"^confirmed=\d+/(\d+|unknown); revision=\d+$",
        "examples": ["confirmed=2/2; revision=3"],
    },
}


def build_openapi(routes: tuple[Route, ...], info: ApiInfo = ADMIN) -> dict[str, Any]:
    models: set[type[BaseModel]] = {ProblemOut}
    for r in routes:
        if r.body is not None:
            models.add(r.body)
        if r.response is not None:
            models.add(r.response)
    ordered = sorted(models, key=lambda m: m.__name__)
    pairs: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (m, "validation" if _is_request(m, routes) else "serialization") for m in ordered
    ]
    _, defs = models_json_schema(pairs, ref_template=REF)
    schemas = defs.get("$defs", {})

    def ref(model: type[BaseModel]) -> dict[str, str]:
        return {"$ref": REF.format(model=model.__name__)}

    problem = {"application/problem+json": {"schema": ref(ProblemOut)}}
    unauthorized = {"text/plain": {"schema": {"type": "string", "const": "Unauthorized"}}}
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        op: dict[str, Any] = {
            "summary": r.summary,
            "tags": [r.tag],
            "operationId": _operation_id(r),
            "responses": {},
        }
        params = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "string", "minLength": 1},
            }
            for name in re.findall(r"{(\w+)}", r.path)
        ]
        params += [
            {
                "name": p.name,
                "in": "query",
                "required": False,
                "description": p.description,
                "schema": _param_schema(p),
            }
            for p in r.query
        ]
        if params:
            op["parameters"] = params
        if r.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref(r.body)}},
            }
        ok: dict[str, Any] = {"description": r.summary}
        if r.response is not None:
            ok["content"] = {r.media_type: {"schema": ref(r.response)}}
        elif r.status != 204:
            ok["content"] = {
                r.media_type: {
                    "schema": {"type": "string"}
                    if r.media_type.startswith("text/")
                    else {"type": "object"}
                }
            }
        if r.method != "GET" and r.propagates:
            ok["headers"] = {"X-Gateway-Propagation": PROPAGATION_HEADER}
        op["responses"][str(r.status)] = ok
        if r.body is not None and 400 not in r.errors:
            raise ValueError(f"{r.method} {r.path} takes a body: say what its 400 means")
        errors = dict(r.errors)
        if not r.public:
            errors[401] = info.unauthorized
        else:
            op["security"] = []
        if r.body is not None:
            errors[413] = info.body_limit
            errors[415] = "The body was sent with a Content-Type other than JSON"
        for status in sorted(errors):
            op["responses"][str(status)] = {
                "description": errors[status],
                "content": unauthorized if status == 401 else problem,
            }
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        # The API's version, as in its paths: no answer reveals the software's (contract).
        "info": {"title": info.title, "version": API_VERSION, "description": info.description},
        "servers": [{"url": "/"}],
        "security": [{info.scheme: []}],
        "components": {
            "schemas": schemas,
            "securitySchemes": {info.scheme: {"type": "http", "scheme": "bearer"}},
        },
        "paths": paths,
    }


def _is_request(model: type[BaseModel], routes: tuple[Route, ...]) -> bool:
    return any(r.body is model for r in routes)


def _operation_id(r: Route) -> str:
    words = re.sub(r"[{}]", "", r.path).strip("/").replace("-", "_").replace(".", "_").split("/")
    return r.method.lower() + "_" + "_".join(w for w in words if w and w not in ("admin", "v1"))
