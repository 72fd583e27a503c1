"""Schemathesis over the whole OpenAPI schema, in-process through the WSGI app, on the real PostgreSQL.

Every operation is fuzzed with tenant A's key (examples, coverage and random phases) and fails on:
a 5xx; an answer the schema does not document (status code, content type, body); a schema-valid request
refused or a schema-invalid one accepted; and any answer to A that carries one of tenant B's ids.

The budget is `SIGNALBOX_FUZZ_EXAMPLES` random cases per operation (a few in `make test`, more in
`make fuzz`). Without `SIGNALBOX_FUZZ_SEED` the run is derandomized: the same cases every time. With it,
the seed picks the cases, and the same seed replays them (CONTRIBUTING.md, "Fuzzing").
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from django.db import transaction
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig

from tests.fuzz.conftest import World

EXAMPLES = int(os.environ.get("SIGNALBOX_FUZZ_EXAMPLES", "2"))
SEED = int(os.environ["SIGNALBOX_FUZZ_SEED"]) if os.environ.get("SIGNALBOX_FUZZ_SEED") else None

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(120 + 30 * EXAMPLES)]

CONFIG: dict[str, Any] = {
    "generation": {
        "max-examples": EXAMPLES,
        "deterministic": SEED is None,
        # The API refuses NUL and unpaired surrogates in any text with 400 `invalid_character` (the
        # schema's description says so; apps/core/parsers.py): not what a schema-valid string is here.
        "allow-x00": False,
        "codec": "utf-8",
        # Tenant A's key goes on every request; a missing or wrong key is the `ignored_auth` check's job.
        "with-security-parameters": False,
        # Unknown query parameters are ignored, as HTTP APIs do; sending one is not an invalid request.
        "allow-extra-parameters": False,
    },
    "phases": {
        "stateful": {"enabled": False},
        # One undocumented method per path shows that it answers 405 with `Allow`; every method would
        # add a tenth to the pass and test DRF's dispatch, the same for all of them.
        "coverage": {"unexpected-methods": ["TRACE"]},
        # Random schema-valid bodies name templates, recipients and tasks that do not exist; the API
        # refuses those (400) as it should. The examples and coverage phases, built from the schema's
        # examples and bounds over the seeded objects, do check that valid requests are accepted.
        "fuzzing": {"checks": {"positive_data_acceptance": {"enabled": False}}},
    },
    "checks": {
        # 422: well formed, refused by a rule the schema cannot express (a past expiry, an unsafe URL).
        "positive_data_acceptance": {"expected-statuses": ["2xx", "3xx", 401, 403, 404, 409, 422, 429]},
    },
}
if SEED is not None:
    CONFIG["seed"] = SEED
# A file upload as the body (POST /api/v1/recipients/imports/): NDJSON goes on the wire as the bytes it is.
schemathesis.serializer.alias("application/x-ndjson", "application/octet-stream")


def _load_schema() -> Any:
    """The schema as `/api/schema/` serves it, generated in-process; requests go to the WSGI app."""
    document = json.loads(
        OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True), renderer_context={})
    )
    loaded = schemathesis.openapi.from_dict(document, config=SchemathesisConfig.from_dict(CONFIG))
    loaded.app = get_wsgi_application()
    return loaded


schema = _load_schema()
CURRENT: dict[str, World] = {}

# Known nonconformance, by operation and failure kind, each with its class: the pass tolerates exactly
# these (any other failure on the same operation still fails it) and fails when one of them stops
# happening, so the list only shrinks. Remove an entry with the fix that makes it unnecessary.
COERCION = "DRF coerces JSON scalars: 0/1 pass as booleans, numbers as strings"
SEMANTIC_400 = "a schema-valid request refused with 400 by a rule the schema cannot express (422 would say so)"
LOOSE_REQUEST_SCHEMA = "the request schema allows what the view refuses: its serializer checks the shape by hand"
MISSING_OBJECT_FILTER = "a filter naming a well-formed id of no object answers 400, not an empty list"
ACCEPTED, REJECTED = "AcceptedNegativeData", "RejectedPositiveData"
PENDING: dict[tuple[str, str], str] = {
    ("POST /api/v1/recipients/", REJECTED): LOOSE_REQUEST_SCHEMA,  # webhook_url: Django's URL rules (host length)
    ("POST /api/v1/recipients/bulk/", REJECTED): LOOSE_REQUEST_SCHEMA,  # the same, in items
    # The same in inline recipients, and "no content for channel X" answered 400 with the shape errors.
    ("POST /api/v1/notifications/", REJECTED): SEMANTIC_400,
    ("POST /api/v1/templates/", REJECTED): LOOSE_REQUEST_SCHEMA,  # `content`: locale keys (OpenAPI 3.0 has no key rule)
    ("POST /api/v1/providers/configs/", REJECTED): LOOSE_REQUEST_SCHEMA,  # each provider's own secrets
}
FIRED: set[tuple[str, str]] = set()
RAN: set[str] = set()


@schema.hook
def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any]) -> Any:
    """Half the time, names real objects in the path: A's (the view's happy path) or B's (must be 404)."""
    world = CURRENT.get("world")
    if world is None or not path_parameters:
        return st.just(path_parameters)
    segments = context.operation.path.strip("/").split("/")
    known: dict[str, Any] = {}
    for name in path_parameters:
        position = segments.index("{" + name + "}")
        values = sorted(world.path_values.get(segments[position - 1], ()))
        if values:
            known[name] = st.sampled_from(values)
    if not known:
        return st.just(path_parameters)
    return st.one_of(st.just(path_parameters), st.fixed_dictionaries(known).map(lambda v: {**path_parameters, **v}))


@schemathesis.check
def no_other_tenants_ids(ctx: Any, response: Any, case: Any) -> bool | None:
    """An answer to tenant A never carries an id of tenant B's objects."""
    world = CURRENT.get("world")
    if world is None:
        return None
    request = response.request
    sent = f"{request.url} {request.body!r}"  # an id A itself sent and sees echoed is not a leak
    leaked = [token for token in world.leaks(response.text or "") if token not in sent]
    if leaked:
        raise AssertionError(f"The answer to tenant A carries tenant B's ids: {sorted(set(leaked))}")
    return None


@schema.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keeps every failure except the known ones in `PENDING` (recorded, so a stale entry is noticed)."""
    key = (case.operation.label, type(failure).__name__)
    if key in PENDING:
        FIRED.add(key)
        return False
    return True


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), database=None, print_blob=True)
def test_the_api_answers_as_its_schema_says(case: Any, world: World) -> None:
    CURRENT["world"] = world
    RAN.add(case.operation.label)
    with transaction.atomic():  # each request's writes are undone, so every case meets the seeded world
        try:
            case.call_and_validate(headers=world.headers_a)
        except BaseException as failure:
            seed = f"SIGNALBOX_FUZZ_SEED={SEED} " if SEED is not None else ""
            failure.add_note(f"Replay: {seed}SIGNALBOX_FUZZ_EXAMPLES={EXAMPLES} pytest tests/fuzz -p no:xdist")
            raise
        finally:
            transaction.set_rollback(True)


def test_the_leak_check_knows_tenant_b_by_its_ids(world: World) -> None:
    """The id scan above is only as good as its list: B owns objects of every kind, with ids to find."""
    from apps.notifications.models import Delivery
    from apps.tenancy.models import Tenant

    b_delivery = Delivery.objects.filter(tenant__slug="fuzz-b").first()
    a_delivery = Delivery.objects.filter(tenant__slug="fuzz-a").first()
    b_device_id = max(world.b_ints)

    assert b_delivery is not None and a_delivery is not None
    assert world.leaks(f'{{"id": "{b_delivery.pk}", "device": {b_device_id}}}') == [
        str(b_delivery.pk),
        str(b_device_id),
    ]
    assert world.leaks(f'{{"id": "{a_delivery.pk}", "tenant": "{Tenant.objects.get(slug="fuzz-a").pk}"}}') == []
    assert len(world.b_uuids) > 20 and len(world.b_ints) > 5


def test_every_pending_nonconformance_still_happens() -> None:
    """Runs after the operations (file order): an entry of `PENDING` whose operation ran without it is
    fixed, and must leave the list."""
    stale = sorted(key for key in PENDING if key[0] in RAN and key not in FIRED)
    assert stale == []
