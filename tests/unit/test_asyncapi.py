"""The AsyncAPI document: complete, self-consistent, and the committed copy is the generated one."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from civicflow.asyncapi import document, render
from civicflow.events import CATALOGUE, CaseSubmitted, Location
from civicflow.ids import uuid7
from civicflow.wire import HEADERS, to_message
from tests.factories import recorded

COMMITTED = Path(__file__).parents[2] / "docs" / "asyncapi.yaml"


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_the_committed_document_is_the_generated_one() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == render(), "docs/asyncapi.yaml is stale: run `make asyncapi`"


def test_every_event_type_is_a_message_of_the_case_events_channel_with_its_payload_schema() -> None:
    doc = document()
    channel = doc["channels"]["caseEvents"]
    assert set(channel["messages"]) == set(CATALOGUE)
    for name, cls in CATALOGUE.items():
        message = _resolve(doc, channel["messages"][name]["$ref"])
        payload = _resolve(doc, message["payload"]["$ref"])
        assert set(payload["properties"]) == set(cls.model_fields), name
        assert message["x-schema-version"] == cls.schema_version


def test_every_reference_resolves() -> None:
    doc = document()
    refs = _refs(doc)
    assert refs
    for ref in refs:
        assert _resolve(doc, ref) is not None, ref


def test_the_documented_headers_are_the_ones_published() -> None:
    now = datetime(2026, 11, 24, tzinfo=UTC)
    submitted = CaseSubmitted(
        tracking_number="QGPE-J5T",
        service_code="POTHOLE",
        description="a hole",
        location=Location(address="1 Main St"),
        submitted_at=now,
    )
    event = recorded(submitted, case_id=uuid7(), version=1, at=now)
    _, _, headers = to_message(event, b"a key for the test only")
    assert [name for name, _ in headers] == list(HEADERS)
    documented = document()["components"]["schemas"]["CloudEventHeaders"]
    assert list(documented["properties"]) == list(HEADERS)


def test_the_document_is_plain_yaml() -> None:
    assert yaml.safe_load(render()) == document()
