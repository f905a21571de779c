"""Schema-based fuzzing of the admin API: schemathesis reads /admin/v1/openapi.json from a live
`gateway serve` process and, for every documented operation, sends generated requests
(authenticated with the admin token) and checks that no answer is a 5xx, that every answer's
status is one the document lists for that operation, and that its body matches the schema the
document gives for it. (tests/test_openapi_errors.py drives each error path on purpose.)

Bounded: a fixed number of examples per operation, no example database written.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)
from support import ADMIN_TOKEN, GatewayProcess, free_port, write_config

from gateway.admin.routes import api_routes

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
EXAMPLES_PER_OPERATION = 40


@pytest.fixture(scope="module")
def admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("schemathesis")
    port, admin_port = free_port(), free_port()
    # The data plane is never called here; its upstream is a port nothing listens on.
    config = write_config(
        tmp / "gw.toml", f"http://127.0.0.1:{free_port()}", tmp / "gw.db", port, admin_port
    )
    process = GatewayProcess(config, tmp / "gateway.log")
    process.start(port, admin_port)
    try:
        yield f"http://127.0.0.1:{admin_port}"
    finally:
        process.stop()


@pytest.fixture(scope="module")
def admin_schema(admin_url: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(
        f"{admin_url}/admin/v1/openapi.json",
        config=SchemathesisConfig(),
        headers=AUTH,
        timeout=10,
    )


def known_ids(admin_url: str) -> dict[str, str]:
    """A fresh account, key and callback origin, so the operations on one resource also get past
    their 404 (fresh per test: another test may have deleted or revoked the last ones)."""
    with requests.Session() as session:
        session.headers.update(AUTH)
        account = session.post(
            f"{admin_url}/admin/v1/accounts", json={"name": "fuzzed"}, timeout=10
        )
        assert account.status_code == 201, account.text
        doc = account.json()
        origin = session.post(
            f"{admin_url}/admin/v1/accounts/{doc['id']}/callback-origins",
            json={"origin": "app.example.com"},
            timeout=10,
        )
        assert origin.status_code == 201, origin.text
    return {
        "account_id": doc["id"],
        "key_id": doc["production_key"]["id"],
        "origin": "app.example.com",
    }


# The operations, from the same route table the document is generated from (so collection needs
# no running server); test_every_documented_operation_is_fuzzed checks the two agree.
# schemathesis leaves out the operation that serves the document it was loaded from.
SELF = ("GET", "/admin/v1/openapi.json")
OPERATIONS = [
    (r.method, r.path)
    for r in api_routes(None, None, None)  # type: ignore[arg-type]
    if (r.method, r.path) != SELF
]
# Negative generation needs something to make invalid: a parameter or a body.
HAS_INPUT = {
    (r.method, r.path)
    for r in api_routes(None, None, None)  # type: ignore[arg-type]
    if r.body is not None or r.query or "{" in r.path
}
CASES = [
    pytest.param(method, path, mode, id=f"{method} {path} [{mode}]")
    for method, path in OPERATIONS
    for mode in (
        "positive",
        *(("negative",) if (method, path) in HAS_INPUT else ()),
        *(("known-ids",) if "{" in path else ()),
    )
]


def test_every_documented_operation_is_fuzzed(admin_schema: schemathesis.BaseSchema) -> None:
    documented = {
        (op.ok().method.upper(), op.ok().path) for op in admin_schema.get_all_operations()
    }
    assert documented == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_admin_api_matches_its_openapi_document(
    admin_schema: schemathesis.BaseSchema,
    admin_url: str,
    method: str,
    path: str,
    mode: str,
) -> None:
    operation = admin_schema[path][method]
    if mode == "known-ids":
        ids = known_ids(admin_url)
        fixed = {name: value for name, value in ids.items() if "{" + name + "}" in path}
        strategy = operation.as_strategy(path_parameters=fixed)
    else:
        strategy = operation.as_strategy(
            GenerationMode.NEGATIVE if mode == "negative" else GenerationMode.POSITIVE
        )

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
    )
    @given(strategy)
    def check(case: schemathesis.Case) -> None:
        response = case.call_and_validate(
            base_url=admin_url,
            headers=AUTH,
            checks=[not_a_server_error, response_schema_conformance, status_code_conformance],
            timeout=10,
        )
        calls.append(response.status_code)

    calls: list[int] = []
    check()
    assert calls, "no request was sent"
