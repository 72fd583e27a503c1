"""A Python client generated from the live OpenAPI schema with a pinned generator (openapi-python-client)
imports completely and talks to the real API: JSON bodies, parsed answers, the error shape.

Before, the generated client failed to import endpoint modules (schemas it could not parse were
dropped) and sent JSON bodies as multipart, because the API also accepted form data. The API accepts
JSON only now (apps/core/parsers.py), so the schema offers JSON only.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from apps.tenancy.services import api_key_create

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PACKAGE = "signalbox_client"


def pinned_generator_version() -> str:
    match = re.search(r"^openapi-python-client==(\S+)$", (ROOT / "requirements" / "dev.in").read_text(), re.M)
    assert match, "openapi-python-client must be pinned in requirements/dev.in"
    return match.group(1)


def generate(schema: dict[str, Any], where: Path) -> tuple[Path, str]:
    (where / "schema.json").write_text(json.dumps(schema))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # its ruff post-hook
    version = subprocess.run(
        [BIN / "openapi-python-client", "--version"], capture_output=True, text=True, check=True, env=env
    ).stdout
    assert pinned_generator_version() in version, version
    result = subprocess.run(
        [
            BIN / "openapi-python-client",
            "generate",
            "--path",
            "schema.json",
            "--output-path",
            PACKAGE,
            "--meta",
            "none",
            "--config",
            str(ROOT / "clients" / "openapi-python-client.yaml"),
        ],
        cwd=where,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return where / PACKAGE, result.stdout + result.stderr


@pytest.fixture
def client_package(live_server, tmp_path, monkeypatch):
    schema = requests.get(f"{live_server.url}/api/schema/?format=json", timeout=30).json()
    package, output = generate(schema, tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield schema, package, output
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]


def operations(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        op["operationId"]: op
        for methods in schema["paths"].values()
        for method, op in methods.items()
        if method in ("get", "post", "put", "patch", "delete")
    }


@pytest.mark.django_db(transaction=True)
def test_the_generated_client_imports_every_endpoint_and_calls_the_real_api(client_package, live_server, tenant):
    schema, package, output = client_package
    # The generator skipped nothing: every schema and every operation made it into the client.
    assert "will not be generated" not in output and "Unable to process schema" not in output, output
    # JSON only: no operation offers form data or multipart. The one upload, the recipient import,
    # takes its file as the raw body (NDJSON or CSV), never a form.
    raw_uploads = {"recipients_imports_create": {"application/x-ndjson", "text/csv"}}
    for operation_id, op in operations(schema).items():
        content = set(op.get("requestBody", {}).get("content", {}))
        assert content <= raw_uploads.get(operation_id, {"application/json"}), f"{operation_id} accepts {content}"

    modules = [m.name for m in pkgutil.walk_packages([str(package)], prefix=f"{PACKAGE}.")]
    for name in modules:
        importlib.import_module(name)  # an ImportError fails here, naming the module
    endpoint_modules = {name.rsplit(".", 1)[1] for name in modules if name.count(".") == 3}
    assert len(endpoint_modules) == len(operations(schema))

    client_module = importlib.import_module(f"{PACKAGE}.client")
    models = importlib.import_module(f"{PACKAGE}.models")
    recipients_create = importlib.import_module(f"{PACKAGE}.api.recipients.recipients_create")
    recipients_retrieve = importlib.import_module(f"{PACKAGE}.api.recipients.recipients_retrieve")
    recipients_partial_update = importlib.import_module(f"{PACKAGE}.api.recipients.recipients_partial_update")
    events_create = importlib.import_module(f"{PACKAGE}.api.events.events_create")

    _, key = api_key_create(tenant=tenant, name="generated-client", scopes=None)
    client = client_module.AuthenticatedClient(base_url=live_server.url, token=key, raise_on_unexpected_status=True)

    created = recipients_create.sync_detailed(
        client=client, body=models.RecipientRequest(external_id="u-1", email="ada@example.com", data={"plan": "pro"})
    )
    assert created.status_code == 201, created.content
    assert created.parsed.external_id == "u-1" and created.parsed.email == "ada@example.com"

    patched = recipients_partial_update.sync_detailed(
        "u-1", client=client, body=models.PatchedRecipientRequest(name="Ada Lovelace")
    )
    assert patched.status_code == 200, patched.content
    fetched = recipients_retrieve.sync("u-1", client=client)
    assert isinstance(fetched, models.Recipient) and fetched.name == "Ada Lovelace"

    event = events_create.sync_detailed(
        client=client,
        body=models.EventCreateRequest(
            type_="order.paid", payload=models.EventCreateRequestPayload.from_dict({"n": 1})
        ),
    )
    assert event.status_code in (201, 202), event.content
    assert event.parsed.type_ == "order.paid"

    missing = recipients_retrieve.sync_detailed("nobody", client=client)
    assert missing.status_code == 404
    assert isinstance(missing.parsed, models.Error) and missing.parsed.code == "not_found"
