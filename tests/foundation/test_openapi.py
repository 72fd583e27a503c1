"""The OpenAPI schema: valid, warning-free, the error shape on every operation, examples where users start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import call_command

HTTP_METHODS = ("get", "put", "post", "delete", "patch")
ERROR_REF = "#/components/schemas/Error"


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The schema as `manage.py spectacular --validate --fail-on-warn` writes it: the command fails on
    an invalid schema or on any generator warning, so building this fixture is the validation test."""
    target = Path(tmp_path_factory.mktemp("openapi")) / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    return yaml.safe_load(target.read_text())


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, methods in schema["paths"].items()
        if path.startswith("/api/v1/")
        for method, operation in methods.items()
        if method in HTTP_METHODS
    ]


def _documents_error_shape(response: dict[str, Any]) -> bool:
    return response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref") == ERROR_REF


def test_the_schema_is_valid_and_generates_without_warnings(schema):
    assert schema["openapi"].startswith("3.")
    assert len(_operations(schema)) > 100


def test_every_operation_documents_an_error_answer_in_the_shared_shape(schema):
    missing = [
        f"{method} {path}"
        for method, path, operation in _operations(schema)
        if not any(
            code.startswith("4") and _documents_error_shape(response)
            for code, response in operation["responses"].items()
        )
    ]

    assert missing == []


def test_operations_that_declare_no_errors_of_their_own_get_the_shared_ones(schema):
    inbox_item = schema["paths"]["/api/v1/inbox/{id}/"]["get"]["responses"]

    assert {"400", "401", "403", "404", "429"} <= set(inbox_item)
    assert inbox_item["401"]["description"] == "Missing, invalid, expired or revoked API key."


def test_an_operation_that_declares_its_own_errors_keeps_them(schema):
    cancel = schema["paths"]["/api/v1/notifications/{id}/cancel/"]["post"]["responses"]

    assert cancel["409"]["description"] == "Already finished."


@pytest.mark.parametrize(
    ("method", "path", "request_examples", "answers_with_examples"),
    [
        ("post", "/api/v1/notifications/", True, {"202", "400", "422"}),
        ("post", "/api/v1/recipients/", True, {"201", "400", "409"}),
        ("get", "/api/v1/inbox/", False, {"200", "400"}),
    ],
)
def test_the_main_notification_calls_carry_examples(schema, method, path, request_examples, answers_with_examples):
    operation = schema["paths"][path][method]

    if request_examples:
        assert operation["requestBody"]["content"]["application/json"]["examples"]
    with_examples = {
        code
        for code, response in operation["responses"].items()
        if response.get("content", {}).get("application/json", {}).get("examples")
    }
    assert answers_with_examples <= with_examples


def test_the_inbox_example_is_a_page_of_items(schema):
    responses = schema["paths"]["/api/v1/inbox/"]["get"]["responses"]
    page = next(iter(responses["200"]["content"]["application/json"]["examples"].values()))["value"]

    assert set(page) == {"next", "previous", "results"}
    assert page["next"].startswith("https://signalbox.example.com/api/v1/inbox/")
    assert page["results"][0]["title"] == "Order A-1001 shipped"
