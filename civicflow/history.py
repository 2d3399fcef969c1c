"""The import mapping: how a city's old system's CSV export reads as civicflow requests, shared by intake's
importer (`civicflow import`) and the router's backtest (`rules dry-run --from-csv`). Pure but for reading
the file; the export itself is read by `civicflow.history_export`.

The mapping (YAML) says which column gives each field, how the old system's names for request types,
channels, statuses and agencies translate into ours, and how to read its timestamps (a naive time is the
city's wall clock).
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from civicflow.codes import CODE, CODE_RULE, channel_of, channel_problem, code_problem

HistoryStatus = Literal["open", "closed"]
PlaceOfNoPlaceService = Literal["drop", "refuse"]


class Columns(BaseModel):
    """Which CSV column gives each field (by its header). Only `service` and `submitted_at` are needed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    external_id: str | None = Field(default=None, description="the old system's request number")
    service: str = Field(description="the request type, in the old system's words")
    description: str | None = None
    address: str | None = None
    lat: str | None = None
    long: str | None = None
    channel: str | None = None
    submitted_at: str
    closed_at: str | None = None
    status: str | None = None
    department: str | None = Field(default=None, description="the old system's department or agency")
    contact_name: str | None = None
    contact_email: str | None = None
    contact_phone: str | None = None
    attributes: dict[str, str] = Field(default_factory=dict, description="our question code -> its column")

    def used(self) -> dict[str, str]:
        """Every field a column is named for, with the column (attributes as attributes.<code>)."""
        fields = {
            name: column for name, column in self.model_dump(exclude={"attributes"}).items() if isinstance(column, str)
        }
        fields.update({f"attributes.{code}": column for code, column in self.attributes.items()})
        return fields


class HistoryMapping(BaseModel):
    """How one old system's export reads as civicflow requests."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str = Field(description="a short code for the old system; imported keys are import:<source>:<id>")
    timezone: str = Field(description="the IANA zone of the city's wall clock, for times written without an offset")
    timestamp_formats: list[str] = Field(
        default_factory=lambda: ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"],
        min_length=1,
        description="strptime formats tried in order; ISO 8601 (with or without an offset) is always tried last",
    )
    columns: Columns
    services: dict[str, str] = Field(default_factory=dict, description="their request-type name -> our service code")
    derive_unmapped_services: bool = Field(
        default=False, description="a type missing from `services` becomes derive_code(name) instead of a refusal"
    )
    channels: dict[str, str] = Field(default_factory=dict, description="their channel name -> ours")
    default_channel: str | None = Field(default=None, description="the channel of a row whose channel cell is blank")
    statuses: dict[str, HistoryStatus] = Field(default_factory=dict, description="their status -> open or closed")
    departments: dict[str, str] = Field(default_factory=dict, description="their agency -> our department id")
    description_when_blank: str | None = Field(
        default=None, description="the description of a row that has none (without it such a row is refused)"
    )
    not_closed_dates: list[date] = Field(
        default_factory=list,
        description="closing dates the old system writes for 'never closed' (like 9999-12-31): taken as blank",
    )
    location_for_services_without_place: PlaceOfNoPlaceService = Field(
        default="drop",
        description="an address on a row whose service takes no place (location: none) is the caller's own:"
        " drop leaves it out (the case does not need it), refuse refuses the row",
    )

    @field_validator("source")
    @classmethod
    def _a_source_code(cls, value: str) -> str:
        if not CODE.match(value) or len(value) > 32:
            raise ValueError(f"source is part of every imported key: {CODE_RULE}, at most 32 characters")
        return value

    @field_validator("timezone")
    @classmethod
    def _a_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone; write one like America/Chicago") from None
        return value

    @field_validator("timestamp_formats")
    @classmethod
    def _formats(cls, value: list[str]) -> list[str]:
        sample = datetime(2026, 11, 28, 23, 30, 15)
        for form in value:
            try:
                back = datetime.strptime(sample.strftime(form), form)
            except ValueError:
                back = None
            if back is None or back.date() != sample.date():
                raise ValueError(
                    f"{form!r} does not read back the date it writes; give a strptime format with the year, month"
                    " and day, like '%m/%d/%Y %I:%M:%S %p'"
                )
        return value

    @field_validator("services", mode="before")
    @classmethod
    def _service_codes(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        for name, code in value.items():
            problem = code_problem("service code", code)
            if problem:
                raise ValueError(f"services[{name!r}]: {problem}")
        return {name_key(str(name)): code for name, code in value.items()}

    @field_validator("departments", mode="before")
    @classmethod
    def _department_ids(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        for name, department in value.items():
            problem = code_problem("department id", department)
            if problem:
                raise ValueError(f"departments[{name!r}]: {problem}")
        return {name_key(str(name)): department for name, department in value.items()}

    @field_validator("channels", mode="before")
    @classmethod
    def _channels(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        for name, channel in value.items():
            if not isinstance(channel, str) or channel_of(channel) is None:
                raise ValueError(f"channels[{name!r}]: {channel_problem(str(channel))}")
        return {name_key(str(name)): str(channel_of(channel)) for name, channel in value.items()}

    @field_validator("statuses", mode="before")
    @classmethod
    def _status_keys(cls, value: Any) -> Any:
        return {name_key(str(name)): status for name, status in value.items()} if isinstance(value, dict) else value

    @field_validator("default_channel")
    @classmethod
    def _default_channel(cls, value: str | None) -> str | None:
        if value is not None and channel_of(value) is None:
            raise ValueError(channel_problem(value))
        return channel_of(value) if value is not None else None

    @model_validator(mode="after")
    def _located_somehow(self) -> HistoryMapping:
        columns = self.columns
        if (columns.lat is None) != (columns.long is None):
            raise ValueError("columns: name both lat and long, or neither")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class MappingError(ValueError):
    """The mapping file cannot be used; the message names the file, the line where known, and the field."""


def name_key(name: str) -> str:
    """How the old system's names are compared: case, surrounding blanks and runs of spaces ignored."""
    return " ".join(name.split()).casefold()


def load_mapping(path: Path) -> HistoryMapping:
    """Read and check a mapping file; MappingError says every problem at once."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(f"{path}: cannot be read as UTF-8 text ({type(exc).__name__})") from None
    return parse_mapping(text, str(path))


def parse_mapping(text: str, name: str = "mapping") -> HistoryMapping:
    try:
        node = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise MappingError(f"{name}:{where}: not valid YAML ({getattr(exc, 'problem', None) or 'syntax'})") from None
    if not isinstance(raw, dict):
        raise MappingError(f"{name}: a mapping file is a YAML mapping with source, timezone and columns at the top")
    try:
        return HistoryMapping.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for item in exc.errors(include_url=False, include_input=False, include_context=False):
            path = ".".join(str(part) for part in item["loc"]) or "mapping"
            line = _line_of(node, item["loc"])
            lines.append(f"  {path}{f' (line {line})' if line else ''}: {item['msg'].removeprefix('Value error, ')}")
        raise MappingError(f"{name}: refused:\n" + "\n".join(lines)) from None


def _line_of(node: Any, loc: tuple[int | str, ...]) -> int | None:
    """The line of the YAML node at loc, as far down the path as it goes (pydantic's loc names the fields)."""
    line = None
    for part in loc:
        if not isinstance(node, yaml.MappingNode):
            break
        found = next((value for key, value in node.value if key.value == part), None)
        if found is None:
            break
        node, line = found, found.start_mark.line + 1
    return line
