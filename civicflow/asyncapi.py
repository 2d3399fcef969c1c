"""The AsyncAPI 3.0 document of civicflow's topics: the public event catalogue for other city systems.

Built from the event catalogue (payload schemas from the pydantic models) and from the wire format
(the CloudEvents headers in `civicflow.wire.HEADERS`), so it cannot drift from what is published.
One channel carries every event type, because every event of a case must stay in order on one
partition; the message types are told apart by the `ce_type` header.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import yaml
from pydantic.json_schema import models_json_schema

from civicflow import wire
from civicflow.consumer import DEAD_LETTER_HEADERS
from civicflow.events import CATALOGUE
from civicflow.settings import KernelSettings

ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING_VERSION = "0.5.0"


def _header_schema(title: str, headers: dict[str, str], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "title": title,
        "properties": {name: {"type": "string", "description": text} for name, text in headers.items()},
        "required": required,
    }


def _summary(cls: type) -> str:
    return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


def document() -> dict[str, Any]:
    """The AsyncAPI document for the default topic names (a deployment may prefix or rename them)."""
    defaults = KernelSettings.model_fields
    topic = defaults["case_events_topic"].default
    dead_letters = defaults["dead_letter_topic"].default
    types = sorted(CATALOGUE)
    _, definitions = models_json_schema(
        [(CATALOGUE[name], "serialization") for name in types], ref_template="#/components/schemas/{model}"
    )
    schemas: dict[str, Any] = dict(sorted(definitions["$defs"].items()))
    schemas["CloudEventHeaders"] = _header_schema("CloudEventHeaders", wire.HEADERS, list(wire.HEADERS))
    # A dead letter carries the original's headers as they were: a record too broken to read may lack some.
    dlq_own = [name for name in DEAD_LETTER_HEADERS if name.startswith("dlq_")]
    schemas["DeadLetterHeaders"] = _header_schema("DeadLetterHeaders", {**wire.HEADERS, **DEAD_LETTER_HEADERS}, dlq_own)
    case_key = {"type": "string", "format": "uuid", "description": "The case id."}
    messages: dict[str, Any] = {}
    for name in types:
        cls = CATALOGUE[name]
        messages[name] = {
            "name": name,
            "title": name,
            "summary": _summary(cls),
            "contentType": "application/json",
            "headers": {"$ref": "#/components/schemas/CloudEventHeaders"},
            "payload": {"$ref": f"#/components/schemas/{cls.__name__}"},
            "correlationId": {"location": "$message.header#/ce_correlationid"},
            "bindings": {"kafka": {"key": case_key, "bindingVersion": KAFKA_BINDING_VERSION}},
            "x-ce-type": name,
            "x-schema-version": cls.schema_version,
        }
    messages["DeadLetter"] = {
        "name": "DeadLetter",
        "title": "DeadLetter",
        "summary": "An event a service could not handle after bounded retries, with why, and where it came from.",
        "contentType": "application/json",
        "headers": {"$ref": "#/components/schemas/DeadLetterHeaders"},
        "payload": {"description": "The original record's value, byte for byte (one of the case events)."},
        "bindings": {"kafka": {"key": case_key, "bindingVersion": KAFKA_BINDING_VERSION}},
    }
    kafka_channel = {"bindingVersion": KAFKA_BINDING_VERSION}
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "civicflow case events",
            "version": version("civicflow"),
            "description": (
                "Every fact civicflow records about a 311 case, published from its event store at least once,"
                " in order per case. Payloads are JSON; the envelope is CloudEvents 1.0 in binary mode (Kafka"
                " headers). Drop redeliveries by ce_id. Resident contact details never appear in the clear."
            ),
        },
        "defaultContentType": "application/json",
        "channels": {
            "caseEvents": {
                "address": topic,
                "title": "Case events",
                "description": "Every event of every case, keyed by case id.",
                "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in types},
                "bindings": {"kafka": {"topic": topic, **kafka_channel}},
            },
            "deadLetters": {
                "address": dead_letters,
                "title": "Dead letters",
                "description": "Events a service gave up on; replay them after a fix.",
                "messages": {"DeadLetter": {"$ref": "#/components/messages/DeadLetter"}},
                "bindings": {"kafka": {"topic": dead_letters, **kafka_channel}},
            },
        },
        "operations": {
            "publishCaseEvents": {
                "action": "send",
                "title": "The relay publishes the event store",
                "channel": {"$ref": "#/channels/caseEvents"},
                "messages": [{"$ref": f"#/channels/caseEvents/messages/{name}"} for name in types],
            },
            "deadLetter": {
                "action": "send",
                "title": "A service sets aside an event it cannot handle",
                "channel": {"$ref": "#/channels/deadLetters"},
                "messages": [{"$ref": "#/channels/deadLetters/messages/DeadLetter"}],
            },
        },
        "components": {"schemas": schemas, "messages": messages},
    }


def render() -> str:
    return yaml.safe_dump(document(), sort_keys=False, allow_unicode=True, width=110)
