"""Schemathesis against the live OpenAPI spec of a real uvicorn server: with a key (no 5xx, every
response conforms to the spec, auth enforced) and without a key (every protected operation refused)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.conftest import Api

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
PUBLIC = {"/health", "/ready", "/metrics", "/openapi.json", "/docs", "/redoc"}
BOUNDED = settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate],
)


@pytest.fixture(scope="module")
def api_schema(api: Api) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{api.url}/openapi.json")


def operations(schema: schemathesis.BaseSchema, mode: GenerationMode) -> list[schemathesis.APIOperation]:
    found = [result.ok() for result in schema.get_all_operations()]
    assert len(found) >= 15
    if (
        mode == GenerationMode.NEGATIVE
    ):  # nothing invalid can be generated for an operation without parameters
        found = [op for op in found if op.definition.raw.get("parameters")]
    return found


def test_spec_declares_security_and_errors(api_schema: schemathesis.BaseSchema) -> None:
    raw = api_schema.raw_schema
    assert set(raw["components"]["securitySchemes"]) == {"ApiKeyAuth", "BearerAuth"}
    for path, item in raw["paths"].items():
        for op in item.values():
            responses = op["responses"]
            assert "500" in responses, path
            if path not in PUBLIC:
                assert op["security"] == [{"ApiKeyAuth": []}, {"BearerAuth": []}], path
                assert {"401", "429"} <= set(responses), path
            for status, response in responses.items():
                if status.startswith(("4", "5")):
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorResponse"), (path, status)


# The pytest plugin of schemathesis 4 does not load under pytest 9 ('Function' has no '_nodeid'), so each
# operation's hypothesis strategy is driven directly; the checks are schemathesis' own.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_live_spec_with_key(api: Api, api_schema: schemathesis.BaseSchema, mode: GenerationMode) -> None:
    for operation in operations(api_schema, mode):

        @given(case=operation.as_strategy(mode))
        @BOUNDED
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(
                base_url=api.url, headers={"X-API-Key": api.admin_key}, checks=[*CHECKS, ignored_auth]
            )

        run()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_live_spec_without_key_refused(
    api: Api, api_schema: schemathesis.BaseSchema, mode: GenerationMode
) -> None:
    for operation in operations(api_schema, mode):

        @given(case=operation.as_strategy(mode))
        @BOUNDED
        def run(case: schemathesis.Case) -> None:
            response = case.call(base_url=api.url)
            if case.operation.path not in PUBLIC:
                assert response.status_code == 401, (
                    case.operation.path,
                    response.status_code,
                    response.text[:300],
                )
                assert response.json()["error"]["code"] == "unauthorized"
            case.validate_response(response, checks=CHECKS)

        run()
