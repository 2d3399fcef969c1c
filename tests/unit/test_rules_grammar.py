"""A rule-set file read as a city writes it: codes in the one grammar intake uses, nothing defined twice,
YAML's surprises (NO read as false) and wrong types explained in words, hostile bytes refused cleanly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from civicflow.codes import CODE
from services.router.rulebook import RuleBook, load_rules
from services.router.rules import RuleSetError

FIXTURE = Path(__file__).parents[1] / "fixtures" / "city"


def city_file(folder: Path, old: str, new: str) -> Path:
    """The test city with one change, in its own folder with its areas."""
    text = (FIXTURE / "rules.yaml").read_text()
    assert old in text
    shutil.copy(FIXTURE / "areas.geojson", folder / "areas.geojson")
    path = folder / "rules.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


def refusal(path: Path) -> str:
    with pytest.raises(RuleSetError) as refused:
        load_rules(path)
    message = str(refused.value)
    assert str(path.parent.resolve()) not in message.replace(str(path), "")  # only the path the caller gave
    return message


POTHOLE = "  POTHOLE: {name: Pothole, group: streets}\n"
STREETS = "  streets: {name: Streets, calendar: office}\n"
RULE = "then: {department: police, sla: {calendar_days: 3}}"


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        (
            POTHOLE,
            POTHOLE + "  Noise - Street/Sidewalk: {name: Noise, group: police}\n",
            "services: 'Noise - Street/Sidewalk' is not a service code: use 1 to 64 ASCII letters, digits, _ . or -,"
            " starting with a letter or digit; write 'NOISE_STREET_SIDEWALK'",
        ),
        (POTHOLE, POTHOLE + "  Asbestos Complaint (B1): {name: A, group: x}\n", "write 'ASBESTOS_COMPLAINT_B1'"),
        (POTHOLE, POTHOLE + "  Señal: {name: S, group: x}\n", "write 'SENAL'"),
        (POTHOLE, POTHOLE + f"  {'A' * 65}: {{name: Long, group: x}}\n", "is not a service code"),
        (POTHOLE, POTHOLE + "  NO: {name: Norway, group: x}\n", "services: YAML read this service code as false"),
        (POTHOLE, POTHOLE + "  311: {name: Number, group: x}\n", "services: the service code 311 is a int"),
        (STREETS, STREETS + "  parks/east: {name: Parks east, calendar: office}\n", "write 'parks-east'"),
        (STREETS, STREETS + "  public works: {name: Works, calendar: office}\n", "is not a department id"),
        ("calendars:\n", "calendars:\n  office hours: {timezone: America/Chicago}\n", "is not a calendar id"),
        ("- id: dogs", "- id: Dogs & cats", "'Dogs & cats' is not a rule id"),
        ("inside: [park]}", "inside: [the park]}", "rule trees-in-the-park, when.inside.0: 'the park' is not an"),
        (RULE, "then: {department: off, sla: {calendar_days: 3}}", "rule noise-by-day, then.department: YAML read"),
        (RULE, "then: {department: 12, sla: {calendar_days: 3}}", "then.department: expected text, found a number"),
        (RULE, "then: {department: police, sla: [3]}", "then.sla: expected a mapping (key: value lines), found a list"),
        (RULE, "then: {department: police, sla: {calendar_days: 3}, priorty: high}", "then.priorty: not a field"),
        (RULE, "then: {department: police, sla: {calendar_days: 3}, priorty: high}", "(priority?)"),
        (RULE, "then: {department: police, sla: {calendar_days: 3}, priority: hgh}", "expected one of 'low'"),
        ("rules:\n", "rulez:\n", "rulez: not a field here (rules?)"),
        (RULE, "then: {department: police, sla: {calendar_days: .nan}}", "found infinity or NaN"),
        ("when: {service_codes: [NOISE]}", "when: {channels: [fax]}", "when.channels.0: expected one of 'phone'"),
        ("when: {service_codes: [NOISE]}", "when: {attributes: {size: 3}}", "expected text or a list, found a number"),
        (STREETS, "  streets: {name: [Streets], calendar: office}\n", "department streets, name: expected text"),
    ],
)
def test_a_name_or_value_the_city_must_change_is_refused_with_what_to_write(
    tmp_path: Path, old: str, new: str, says: str
) -> None:
    assert says in refusal(city_file(tmp_path, old, new))


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        (POTHOLE, POTHOLE * 2, "services: POTHOLE is defined twice (lines 23 and 24)"),
        (POTHOLE, POTHOLE * 3, "services: POTHOLE is defined 3 times (lines 23, 24 and 25)"),
        (STREETS, STREETS + "  parks: {}\n  streets: {}\n", "departments: streets is defined twice (lines 15 and 17)"),
        ("calendars:\n", "calendars:\n  always: {timezone: America/Chicago}\n", "calendars: always is defined twice"),
        (RULE, RULE + "\n    then: {}", "rule noise-by-day: then is defined twice"),
        ("- id: dogs", "- id: noise-by-day", "rule noise-by-day: the id is used twice (rules #"),
        ("version:", "version: 1\nversion:", "version is defined twice (lines 2 and 3)"),
    ],
)
def test_anything_defined_twice_is_refused_with_both_places(tmp_path: Path, old: str, new: str, says: str) -> None:
    assert says in refusal(city_file(tmp_path, old, new))


def test_area_ids_follow_the_grammar_and_are_defined_once(tmp_path: Path) -> None:
    path = city_file(tmp_path, "version:", "version:")
    areas = json.loads((tmp_path / "areas.geojson").read_text())
    first = areas["features"][0]
    areas["features"] += [
        {**first, "properties": {"id": first["properties"]["id"]}},
        {**first, "properties": {"id": "Ward 3 / North"}},
        {**first, "properties": {"id": True}},
    ]
    (tmp_path / "areas.geojson").write_text(json.dumps(areas))
    message = refusal(path)
    n = len(areas["features"])
    source = "areas file areas.geojson"
    assert f"{source}, feature #{n - 2}, properties.id: area {first['properties']['id']} is defined twice" in message
    assert f"{source}, feature #{n - 1}, properties.id: 'Ward 3 / North' is not an area id" in message
    assert "write 'ward-3-north'" in message
    assert f"feature #{n}, properties.id: YAML read this area id as true" in message


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"version: 1\x00\n", "not valid YAML: character 11: U+0000 is not allowed"),
        (b"\xff\xfe version: 1", "not UTF-8 text (byte 0)"),
        (b"[" * 100_000, "nested too deeply"),
        (b"- just\n- a list\n", "expected a mapping with version, rules, departments"),
        (b"", "found nothing"),
    ],
)
def test_hostile_bytes_are_refused_with_a_reason(tmp_path: Path, content: bytes, says: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_bytes(content)
    assert says in refusal(path)


def test_a_megabyte_code_is_refused_without_being_echoed(tmp_path: Path) -> None:
    huge = "X " * 500_000
    # an explicit key (`? key`): YAML allows plain keys of 1024 characters at most
    message = refusal(city_file(tmp_path, POTHOLE, POTHOLE + f"  ? {huge}\n  : {{name: Huge, group: x}}\n"))
    assert "is not a service code" in message
    assert len(message) < 2_000


@given(st.text(max_size=200))
@settings(max_examples=150, deadline=None)
def test_any_text_as_a_service_code_is_taken_exactly_when_intake_would_take_it(
    tmp_path_factory: pytest.TempPathFactory, key: str
) -> None:
    path = city_file(
        tmp_path_factory.mktemp("city"), POTHOLE, POTHOLE + f"  {json.dumps(key)}: {{name: Any, group: x}}\n"
    )
    if CODE.match(key) and key != "POTHOLE":
        assert key in load_rules(path).rule_set.services
    else:
        assert "services: " in refusal(path)


def test_a_renamed_catalogue_is_refused_one_problem_a_line_with_guesses_for_the_first(tmp_path: Path) -> None:
    rules = "".join(
        f"  - id: r{n}\n    description: r\n    when: {{service_codes: [POTHOL{n}]}}\n"
        f"    then: {{department: streets, sla: {{calendar_days: 1}}}}\n"
        for n in range(40)
    )
    message = refusal(city_file(tmp_path, "rules:\n", f"rules:\n{rules}"))
    unknown = [line for line in message.splitlines() if "is not in services" in line]
    assert len(unknown) == 40
    assert all(line.startswith(str(tmp_path / "rules.yaml") + ": rule r") for line in unknown)
    assert "rule r0: when.service_codes 'POTHOL0' (POTHOLE?) is not in services" in message


# Values a city file can hold by mistake or by malice, put where the fixture has a value.
_hostile = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        ["\x00", "NO", "off", ".nan", ".inf", "-1", "", " ", "[]", "{}", "~", "!!binary AA==", "&a x", "*a"]
    ),
    st.builds(lambda n: "x" * n, st.sampled_from([65, 1025, 100_000])),
)
_VALUE_LINES = [n for n, line in enumerate((FIXTURE / "rules.yaml").read_text().splitlines()) if ": " in line]


@given(st.sampled_from(_VALUE_LINES), _hostile)
@settings(max_examples=200, deadline=None)
def test_a_hostile_value_anywhere_is_refused_by_place_or_taken_and_the_rules_in_force_stay(
    tmp_path_factory: pytest.TempPathFactory, line: int, value: str
) -> None:
    folder = tmp_path_factory.mktemp("city")
    shutil.copy(FIXTURE / "areas.geojson", folder / "areas.geojson")
    shutil.copy(FIXTURE / "rules.yaml", folder / "rules.yaml")
    book = RuleBook(folder / "rules.yaml")
    before = book.current
    lines = (FIXTURE / "rules.yaml").read_text().splitlines()
    key, _, _ = lines[line].partition(": ")
    lines[line] = f"{key}: {value}"
    edited = folder / "edited.yaml"
    edited.write_text("\n".join(lines) + "\n")
    try:
        book.replace(edited)
    except RuleSetError as exc:
        assert book.current is before
        assert all(problem.startswith(f"{edited}: ") for problem in str(exc).splitlines())
        assert len(str(exc)) < 20_000
