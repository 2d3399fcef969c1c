"""The city file's connector section: what a department may say about its own system, refused in words."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from civicflow.department_systems import (
    DEFAULT_CONNECTOR,
    ConnectorSpec,
    MissingSecret,
    SecretRef,
    connector_specs,
    their_status_key,
)


def spec(**fields: object) -> ConnectorSpec:
    return ConnectorSpec.model_validate(fields)


def refusal(**fields: object) -> str:
    with pytest.raises(ValidationError) as caught:
        ConnectorSpec.model_validate(fields)
    return str(caught.value)


def test_a_credential_written_inline_is_refused_with_how_to_refer_to_it() -> None:
    assert "never inline: write {env: VARIABLE_NAME} or {file: PATH}" in refusal(
        kind="open311", endpoint="https://their.example/open311/v2", credentials="s3cr3t-value"
    )


def test_each_kind_needs_its_own_settings_and_refuses_another_kinds() -> None:
    assert "an open311 connector needs endpoint" in refusal(kind="open311")
    assert "an email connector needs inbox" in refusal(kind="email")
    assert "endpoint: not a setting of an email connector" in refusal(
        kind="email", inbox="roads@city.example", endpoint="https://x.example"
    )
    assert "poll_seconds: not a setting of a rest_webhook connector" in refusal(kind="rest_webhook", poll_seconds=5)
    assert "is not an http(s) URL" in refusal(kind="open311", endpoint="ftp://their.example")
    assert "is not an e-mail address" in refusal(kind="email", inbox="not an address")


def test_their_statuses_map_to_ours_through_the_kinds_defaults_and_the_city_file() -> None:
    open311 = spec(
        kind="open311",
        endpoint="https://their.example/open311/v2/",
        statuses={"reverse": {"Awaiting Parts": "in_progress", "Done!": "fixed"}},
    )
    assert open311.endpoint == "https://their.example/open311/v2"
    assert open311.ours("investigating") == "acknowledged"  # FixMyStreet's word, by the kind's default
    assert open311.ours("NOT_COUNCILS_RESPONSIBILITY") == "not_our_responsibility"
    assert open311.ours("awaiting-parts") == "in_progress"  # case, spaces and hyphens do not matter
    assert open311.ours("done!") == "resolved"  # an alias of ours in the city file
    assert open311.ours("action scheduled") == "action_scheduled"  # ours, as they may write it
    assert open311.ours("something new") is None  # unmapped: a note, never an error
    assert open311.theirs("resolved") == "fixed" and open311.theirs("cancelled") == "closed"  # no CANCELLED there


def test_a_reverse_mapping_to_a_status_we_do_not_have_is_refused() -> None:
    assert "'internal_referral'" in refusal(kind="rest_webhook", statuses={"reverse": {"x": "fixd"}})


def test_a_secret_by_reference_is_read_from_the_environment_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTRACT_TEST_KEY", "from-the-environment")
    assert SecretRef(env="CONTRACT_TEST_KEY").resolve() == "from-the-environment"
    (tmp_path / "key").write_text("from-a-file\n")
    assert SecretRef(file="key").resolve(tmp_path) == "from-a-file"
    with pytest.raises(MissingSecret, match="the file missing is not set or empty"):
        SecretRef(file="missing").resolve(tmp_path)
    with pytest.raises(ValidationError, match="exactly one"):
        SecretRef.model_validate({"env": "A", "file": "b"})


def test_departments_without_a_connector_get_the_default_and_a_wrong_one_names_its_department() -> None:
    found = connector_specs({"streets": {"name": "Streets"}, "water": {"connector": {"kind": "grpc"}}})
    assert found["streets"] is DEFAULT_CONNECTOR and found["water"].kind == "grpc"
    with pytest.raises(ValueError, match=r"departments\.parks\.connector"):
        connector_specs({"parks": {"connector": {"kind": "carrier-pigeon"}}})


@given(st.text(max_size=80))
def test_any_status_they_send_is_looked_up_without_error(status: str) -> None:
    assert DEFAULT_CONNECTOR.ours(status) in (None, *DEFAULT_CONNECTOR.reverse().values())
    assert their_status_key(status) == their_status_key(their_status_key(status))


def test_rules_check_refuses_a_mapped_service_the_catalogue_does_not_have() -> None:
    import yaml

    from services.router.rules import RuleSetError, parse_rule_set

    raw = yaml.safe_load((Path(__file__).parents[2] / "samples/city/sample_city.yaml").read_text())
    raw["departments"]["sanitation"]["connector"] = {
        "kind": "open311",
        "endpoint": "https://their.example/open311/v2",
        "services": {"POTHOLEZ": "4"},
    }
    with pytest.raises(RuleSetError, match=r"department sanitation: connector.services 'POTHOLEZ' \(POTHOLE\?\)"):
        parse_rule_set(raw, "city")
