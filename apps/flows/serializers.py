"""What the flows API reads and answers."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers

from apps.flows import spec
from apps.flows.models import Flow, FlowInstance, FlowRun
from apps.notifications import rendering

# The request schema of a flow document, as `apps.flows.spec` parses it (the parser checks; these
# serializers only document it): each step one of six objects by `type`, with that type's fields.
# Fields a step does not take are ignored, so no step object forbids other properties.


def _up_to(limit: int) -> str:
    """A regex of the whole numbers 1..limit in decimal, leading zeros allowed."""
    digits = str(limit)
    shorter = [rf"[1-9][0-9]{{0,{len(digits) - 2}}}"] if len(digits) > 1 else []
    same = [
        f"{digits[:i]}[{'1' if i == 0 else '0'}-{int(d) - 1}][0-9]{{{len(digits) - i - 1}}}"
        for i, d in enumerate(digits)
        if int(d) > (1 if i == 0 else 0)
    ]
    return f"0*(?:{'|'.join([*shorter, *same, digits])})"


DURATION_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {"type": "integer", "minimum": 1, "maximum": spec.MAX_DURATION, "description": "Seconds."},
        {
            "type": "string",
            "pattern": "^\\s*(?:"
            + "|".join(f"{_up_to(spec.MAX_DURATION // seconds)}\\s*{unit}" for unit, seconds in spec.UNITS.items())
            + ")\\s*$",
            "description": '"30s", "10m", "2h", "1d".',
        },
    ],
    "description": "Seconds, or a number and a unit (s, m, h, d); at most 90 days.",
}
STEP_ID_SCHEMA: dict[str, Any] = {"type": "string", "pattern": spec.ID_RE.pattern}
CHANNEL_SCHEMA: dict[str, Any] = {"type": "string", "enum": list(rendering.CHANNELS)}
STATE_SCHEMA: dict[str, Any] = {"type": "string", "enum": list(spec.STATES)}
STATES_SCHEMA: dict[str, Any] = {
    "oneOf": [STATE_SCHEMA, {"type": "array", "items": STATE_SCHEMA, "minItems": 1}],
    "description": "A state, or a list of them.",
}


def _channels_schema(least: int) -> dict[str, Any]:
    return {"type": "array", "items": CHANNEL_SCHEMA, "minItems": least, "uniqueItems": True}


@extend_schema_field(STEP_ID_SCHEMA)
class StepIdField(serializers.CharField):
    """A step id: letters, digits, `_` and `-`, at most 64."""


@extend_schema_field({**STEP_ID_SCHEMA, "nullable": True})
class StepTargetField(serializers.JSONField):
    """A step id of this flow (422 when no step has it), or null."""


@extend_schema_field(DURATION_SCHEMA)
class DurationField(serializers.JSONField):
    """A duration (`spec.parse_duration`)."""


@extend_schema_field({**DURATION_SCHEMA, "nullable": True})
class NullableDurationField(serializers.JSONField):
    """A duration, or null: none."""


@extend_schema_field(_channels_schema(1))
class ChannelsField(serializers.JSONField):
    """Channels, each once."""


@extend_schema_field(_channels_schema(2))
class FallbackChannelsField(serializers.JSONField):
    """At least two channels, each once, in order."""


@extend_schema_field(STATES_SCHEMA)
class StatesField(serializers.JSONField):
    """A delivery state or a list of them."""


@extend_schema_field(
    {
        "oneOf": [
            {
                "type": "object",
                "properties": {"cel": {"type": "string", "description": "Over `payload` and `recipient`."}},
                "required": ["cel"],
            },
            {
                "type": "object",
                "properties": {"channel": CHANNEL_SCHEMA, "state": STATES_SCHEMA},
                "required": ["channel", "state"],
                "not": {"required": ["cel"]},
            },
        ],
        "description": 'This recipient\'s delivery on a channel, {"channel": "in_app", "state": ["read"]}, '
        'or a CEL expression, {"cel": "payload.total > 100"} (422 when it does not compile).',
    }
)
class ConditionField(serializers.JSONField):
    """A branch's condition (`spec._condition`)."""


def _step_type(value: str) -> serializers.Field[Any, Any, Any, Any]:
    field = extend_schema_field({"type": "string", "enum": [value]})(type("StepType", (serializers.CharField,), {}))
    return field()  # type: ignore[no-any-return]


class _StepSerializer(serializers.Serializer[Any]):
    id = StepIdField()
    next = StepTargetField(
        required=False, help_text="The step after this one (default: the following step; null: none, the run ends)."
    )


class FlowSendStepSerializer(_StepSerializer):
    """Sends the notification on these channels (a channel appears in one send of a flow, else 422)."""

    type = _step_type("send")
    channels = ChannelsField()


class FlowDelayStepSerializer(_StepSerializer):
    """Waits `duration`, or until the recipient's next local `until`; one of the two, else 422."""

    type = _step_type("delay")
    duration = DurationField(required=False)
    until = serializers.RegexField(spec.TIME_OF_DAY_RE.pattern, required=False, help_text='A local time, "HH:MM".')


class FlowDigestStepSerializer(_StepSerializer):
    """The following step (a send, else 422) collects into digest windows."""

    type = _step_type("digest")
    window_minutes = serializers.IntegerField(min_value=1, max_value=7 * 24 * 60)
    key = serializers.CharField(
        required=False, min_length=1, max_length=200, help_text="Jinja over the payload (default: the step id)."
    )


class FlowBranchStepSerializer(_StepSerializer):
    """Goes to `then` when the condition holds (waiting up to `wait` for it), else to `else`."""

    type = _step_type("branch")
    then = StepTargetField(required=False, help_text="Default (absent or null): the following step.")
    wait = NullableDurationField(required=False)
    # `if` and `else` are Python keywords: declared below.


FlowBranchStepSerializer._declared_fields["if"] = ConditionField()
FlowBranchStepSerializer._declared_fields["else"] = StepTargetField(
    required=False, help_text="Default (absent or null): the following step."
)


class FlowFallbackStepSerializer(_StepSerializer):
    """Sends on the first channel, then on the next while a delivery ends in one of `on` within `wait`."""

    type = _step_type("fallback")
    channels = FallbackChannelsField()
    on = StatesField(required=False, help_text="Default: bounced, dead, failed, suppressed.")
    wait = DurationField(required=False, help_text="Default: 1 h.")


class FlowExitStepSerializer(_StepSerializer):
    """Ends the run."""

    type = _step_type("exit")


@extend_schema_field(
    PolymorphicProxySerializer(
        component_name="FlowStep",
        serializers={
            "send": FlowSendStepSerializer,
            "delay": FlowDelayStepSerializer,
            "digest": FlowDigestStepSerializer,
            "branch": FlowBranchStepSerializer,
            "fallback": FlowFallbackStepSerializer,
            "exit": FlowExitStepSerializer,
        },
        resource_type_field_name="type",
        many=False,
    )
)
class FlowStepField(serializers.JSONField):
    """One step, by its `type` (docs/flows.md)."""


class CancelOnSerializer(serializers.Serializer[Any]):
    event_type = serializers.CharField()
    key = serializers.CharField()


class FlowDocumentSerializer(serializers.Serializer[Any]):
    """A flow definition (checked whole by the service, which answers field errors)."""

    key = serializers.RegexField(spec.KEY_RE.pattern, max_length=64)
    name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    template = serializers.SlugField(
        required=False,
        allow_blank=True,
        allow_null=True,
        max_length=100,
        help_text="The template a notification uses by default (empty or null: none; each notification names one).",
    )
    cancel_on = CancelOnSerializer(
        required=False, allow_null=True, help_text="Ends the flow on a matching event; null: none."
    )
    steps = serializers.ListField(child=FlowStepField(), min_length=1, max_length=spec.MAX_STEPS)


class FlowSerializer(serializers.ModelSerializer[Flow]):
    version = serializers.IntegerField(source="current_version.version", default=None, read_only=True)
    template = serializers.CharField(source="current_version.template_key", default="", read_only=True)
    cancel_on = serializers.JSONField(source="current_version.cancel_on", default=None, read_only=True)
    document = serializers.JSONField(source="current_version.document", default=None, read_only=True)
    steps = serializers.JSONField(source="current_version.steps", default=None, read_only=True)

    class Meta:
        model = Flow
        fields = [
            "key",
            "name",
            "version",
            "template",
            "cancel_on",
            "document",
            "steps",
            "archived_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class FlowDiagramSerializer(serializers.Serializer[Any]):
    flow = serializers.CharField()
    version = serializers.IntegerField()
    mermaid = serializers.CharField()


class FlowInstanceSerializer(serializers.ModelSerializer[FlowInstance]):
    notification_id = serializers.UUIDField(read_only=True)
    flow = serializers.CharField(source="flow_version.flow.key", read_only=True)
    version = serializers.IntegerField(source="flow_version.version", read_only=True)
    counts = serializers.SerializerMethodField(help_text="{step id: {run status: count}}")
    mermaid = serializers.SerializerMethodField(help_text="The flow with the number of runs at each step.")

    class Meta:
        model = FlowInstance
        fields = [
            "notification_id",
            "flow",
            "version",
            "status",
            "recipient_count",
            "cancel_reason",
            "counts",
            "mermaid",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.DictField(child=serializers.DictField(child=serializers.IntegerField())))
    def get_counts(self, instance: FlowInstance) -> dict[str, dict[str, int]]:
        return self.context["counts"]

    def get_mermaid(self, instance: FlowInstance) -> str:
        return self.context["mermaid"]


class FlowRunSerializer(serializers.ModelSerializer[FlowRun]):
    recipient = serializers.CharField(source="recipient.external_id", read_only=True)
    history = serializers.JSONField(read_only=True, help_text="[{step, at, event, why?, to?, deliveries?}]")

    class Meta:
        model = FlowRun
        fields = [
            "id",
            "notification_id",
            "recipient",
            "step",
            "phase",
            "status",
            "due_at",
            "deadline_at",
            "attempts",
            "history",
            "created_at",
            "updated_at",
            "finished_at",
        ]
        read_only_fields = fields
