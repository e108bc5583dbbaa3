"""The OpenAPI document is generated from serving/contract.py: no error code or answer field is left out."""

from __future__ import annotations

import ast
import re
import typing
from pathlib import Path

import pytest

from serving import contract
from serving.contract import ERROR_STATUS, ErrorCode
from serving.openapi import build_document
from serving.proxy import PROXY_ERRORS, render_config
from tests.serving.conftest import CUSTOMER_SYNC, ORDERS_SYNC
from tests.support import ProjectFactory

SERVING = Path(contract.__file__).parent


@pytest.fixture(scope="module")
def document(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    factory = ProjectFactory(root, warehouse_url=f"duckdb:///{root / 'w.duckdb'}", state_url=f"sqlite:///{root / 's.db'}")
    project = factory([CUSTOMER_SYNC, ORDERS_SYNC], regions={"us": ["127.0.0.1:1"]})
    return build_document(project, "us")


def codes_answered(document) -> dict[str, set[str]]:
    """Every error code an operation of the document lists, with the statuses it is listed under."""
    answered: dict[str, set[str]] = {}
    for item in document["paths"].values():
        for method, operation in item.items():
            if method == "parameters":
                continue
            for status, response in operation["responses"].items():
                for code in re.findall(r"Codes: (.*)\.$", response["description"])[:1]:
                    for name in code.split(", "):
                        answered.setdefault(name, set()).add(status)
    return answered


def codes_named_in_serving() -> set[ErrorCode]:
    """The ErrorCode members any module of serving/ uses (contract.py, which defines them, aside)."""
    used = set()
    for module in SERVING.glob("*.py"):
        if module.name == "contract.py":
            continue
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in {"ErrorCode", "E"}:
                used.add(ErrorCode[node.attr])
    return used


def test_every_error_code_serving_answers_with_is_listed_by_an_operation_under_its_status(document):
    answered = codes_answered(document)
    used = codes_named_in_serving() | {page.code for page in PROXY_ERRORS if page.answers != "internal"}

    assert ErrorCode.STATE_UNAVAILABLE in used and ErrorCode.BAD_GATEWAY in used  # the scan sees both kinds
    for code in used - {ErrorCode.ERROR, ErrorCode.METHOD_NOT_ALLOWED}:  # any route: said in info.description
        assert answered.get(code.value) == {str(ERROR_STATUS[code])}, code
    assert "405 method_not_allowed" in document["info"]["description"]


def test_no_error_code_is_written_as_a_string_outside_the_contract():
    # A code spelt as a string in a handler would bypass the enum (and so the document).
    codes = {code.value for code in ErrorCode}
    for module in SERVING.glob("*.py"):
        if module.name == "contract.py":
            continue
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert node.value not in codes - {"error"}, f"{module.name}:{node.lineno} spells {node.value!r}"


def test_every_code_is_in_the_documents_error_code_enum(document):
    assert document["components"]["schemas"]["ErrorCode"]["enum"] == [code.value for code in ErrorCode]
    assert set(ERROR_STATUS) == set(ErrorCode)


@pytest.mark.parametrize("model", contract.MODELS, ids=lambda model: model.__name__)
def test_every_schema_has_exactly_the_fields_of_its_model(document, model):
    schema = document["components"]["schemas"][model.__name__]
    hints = typing.get_type_hints(model)

    assert list(schema["properties"]) == list(hints)
    assert set(schema.get("required", [])) == model.__required_keys__
    assert schema["additionalProperties"] is False


def test_the_proxys_own_answers_are_the_contracts_codes_with_their_statuses(tmp_path):
    config = render_config(listen="127.0.0.1:1", upstream=tmp_path / "g.sock", runtime=tmp_path)

    pages = re.findall(r"return (\d+) '(\{.*\})';", config)
    assert len(pages) == len(PROXY_ERRORS)
    for status, body in pages:
        code = ErrorCode(re.search(r'"code": "(\w+)"', body)[1])
        assert ERROR_STATUS[code] == int(status)
    assert "error_page 494 =431 /_larder/error/431;" in config


def test_the_run_status_and_record_sources_are_the_documents_enums(document):
    schemas = document["components"]["schemas"]
    assert schemas["Run"]["properties"]["status"]["enum"] == ["running", "succeeded", "failed"]
    lookup = document["paths"]["/v1/collections/{collection}/records/{index_key}/{index_value}"]["get"]
    assert lookup["responses"]["200"]["headers"]["X-Larder-Source"]["schema"]["enum"] == [
        "cache", "state", "state-cache-down"]
    assert schemas["SyncLineage"]["properties"]["delete"]["enum"] == ["keep", "clear", "delete"]
