"""/openapi.json describes every endpoint and error; schemathesis checks the running API against it."""

from __future__ import annotations

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig

from serving.app import create_app
from serving.auth import KeyRing

# Bounded so the suite stays fast: this many generated cases per operation.
CASES_PER_OPERATION = 25


def test_the_document_describes_every_route_of_the_app(stack):
    document = requests.get(stack.api.base + "/openapi.json", timeout=5).json()
    app = create_app(stack.project, "us", state=stack.state, keyring=KeyRing(stack.state, refresh_seconds=3600))

    documented = {path for path in document["paths"]}
    routed = {route.uri_template.replace(":path", "") for route in _routes(app)}

    assert documented == routed
    lookup = document["paths"]["/v1/collections/{collection}/records/{index_key}/{index_value}"]
    assert set(lookup) == {"parameters", "get", "head"}
    assert lookup["get"]["responses"]["404"]["content"]["application/json"]["schema"]["allOf"][1][
        "properties"]["error"]["properties"]["code"]["enum"] == [
        "unknown_collection", "unknown_index", "record_not_found", "not_found"]
    assert {p["schema"].get("enum") and tuple(p["schema"]["enum"]) for p in lookup["parameters"]} >= {
        tuple(stack.project.collection_names)}


def test_the_document_lists_the_codes_of_outages_throttling_and_strict_bodies(stack):
    document = requests.get(stack.api.base + "/openapi.json", timeout=5).json()

    def codes(path: str, method: str, status: str) -> list[str]:
        response = document["paths"][path][method]["responses"][status]
        return response["content"]["application/json"]["schema"]["allOf"][1]["properties"]["error"][
            "properties"]["code"]["enum"]

    lookup = "/v1/collections/{collection}/records/{index_key}/{index_value}"
    batch = "/v1/collections/{collection}/records/{index_key}"
    for path, method in ((lookup, "get"), (batch, "get"), (batch, "post")):
        assert codes(path, method, "503") == ["state_unavailable", "keys_unavailable"]
        assert codes(path, method, "429") == ["rate_limited", "too_many_invalid_keys"]
    assert "unknown_property" in codes(batch, "post", "400")
    assert "unknown_property" not in codes(batch, "get", "400")
    body = _resolved(document, document["paths"][batch]["post"]["requestBody"]["content"]["application/json"]["schema"])
    assert body["additionalProperties"] is False
    assert body["properties"]["values"]["maxItems"] == 100


def _resolved(document, schema):
    """`schema`, or what its $ref names in the document."""
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _routes(app):
    nodes = list(app._router._roots)
    while nodes:
        node = nodes.pop()
        nodes.extend(node.children)
        if node.resource is not None:
            yield node


OPERATIONS = [
    ("/v1/collections/{collection}/records/{index_key}/{index_value}", "GET"),
    ("/v1/collections/{collection}/records/{index_key}/{index_value}", "HEAD"),
    ("/v1/collections/{collection}/records/{index_key}", "GET"),
    ("/v1/collections/{collection}/records/{index_key}", "POST"),
    ("/v1/collections", "GET"),
    ("/v1/collections/{collection}/lineage", "GET"),
    ("/v1/syncs/{sync}/runs", "GET"),
    ("/healthz", "GET"),
    ("/readyz", "GET"),
    ("/openapi.json", "GET"),
    ("/metrics", "GET"),
]


@pytest.fixture(scope="module")
def api_schema(stack):
    # The key goes through schemathesis' auth config, so its negative cases can also leave it out.
    config = SchemathesisConfig.from_dict({"auth": {"openapi": {"bearer": {"bearer": stack.key}}}})
    return schemathesis.openapi.from_url(stack.api.base + "/openapi.json", config=config)


# schemathesis' pytest plugin (`from_fixture`) needs pytest < 9, so cases are drawn with its
# Hypothesis strategies instead: valid inputs, then invalid ones, for every operation.
CASES = [(path, method, GenerationMode.POSITIVE) for path, method in OPERATIONS] + [
    (path, method, GenerationMode.NEGATIVE) for path, method in OPERATIONS if path.startswith("/v1/")
]  # the public endpoints take no input that could be invalid


@pytest.mark.parametrize(("path", "method", "mode"), CASES, ids=[f"{m} {p} {g.value}" for p, m, g in CASES])
def test_the_api_conforms_to_its_openapi_document(api_schema, path, method, mode):
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=CASES_PER_OPERATION, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def conforms(case):
        case.call_and_validate()

    conforms()
