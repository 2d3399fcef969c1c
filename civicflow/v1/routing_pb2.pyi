import datetime

from civicflow.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DraftRequest(_message.Message):
    __slots__ = ("service_code", "description", "location", "attributes", "flags", "channel", "submitted_at")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SERVICE_CODE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    service_code: str
    description: str
    location: _common_pb2.Location
    attributes: _containers.ScalarMap[str, str]
    flags: _containers.RepeatedScalarFieldContainer[str]
    channel: str
    submitted_at: _timestamp_pb2.Timestamp
    def __init__(self, service_code: _Optional[str] = ..., description: _Optional[str] = ..., location: _Optional[_Union[_common_pb2.Location, _Mapping]] = ..., attributes: _Optional[_Mapping[str, str]] = ..., flags: _Optional[_Iterable[str]] = ..., channel: _Optional[str] = ..., submitted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ExplainRouteRequest(_message.Message):
    __slots__ = ("draft", "tracking_number")
    DRAFT_FIELD_NUMBER: _ClassVar[int]
    TRACKING_NUMBER_FIELD_NUMBER: _ClassVar[int]
    draft: DraftRequest
    tracking_number: str
    def __init__(self, draft: _Optional[_Union[DraftRequest, _Mapping]] = ..., tracking_number: _Optional[str] = ...) -> None: ...

class RuleEvaluation(_message.Message):
    __slots__ = ("rule_id", "description", "matched", "reasons", "skipped", "conditions_held", "conditions")
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_HELD_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    rule_id: str
    description: str
    matched: bool
    reasons: _containers.RepeatedScalarFieldContainer[str]
    skipped: str
    conditions_held: int
    conditions: int
    def __init__(self, rule_id: _Optional[str] = ..., description: _Optional[str] = ..., matched: _Optional[bool] = ..., reasons: _Optional[_Iterable[str]] = ..., skipped: _Optional[str] = ..., conditions_held: _Optional[int] = ..., conditions: _Optional[int] = ...) -> None: ...

class ExplainRouteResponse(_message.Message):
    __slots__ = ("routed", "department_id", "department_name", "queue", "priority", "due_at", "sla", "rule_id", "rule_set_version", "reasons", "tags", "triage_reason", "evaluations", "time_zone")
    ROUTED_FIELD_NUMBER: _ClassVar[int]
    DEPARTMENT_ID_FIELD_NUMBER: _ClassVar[int]
    DEPARTMENT_NAME_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    DUE_AT_FIELD_NUMBER: _ClassVar[int]
    SLA_FIELD_NUMBER: _ClassVar[int]
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    RULE_SET_VERSION_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    TRIAGE_REASON_FIELD_NUMBER: _ClassVar[int]
    EVALUATIONS_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    routed: bool
    department_id: str
    department_name: str
    queue: str
    priority: str
    due_at: _timestamp_pb2.Timestamp
    sla: str
    rule_id: str
    rule_set_version: str
    reasons: _containers.RepeatedScalarFieldContainer[str]
    tags: _containers.RepeatedScalarFieldContainer[str]
    triage_reason: str
    evaluations: _containers.RepeatedCompositeFieldContainer[RuleEvaluation]
    time_zone: str
    def __init__(self, routed: _Optional[bool] = ..., department_id: _Optional[str] = ..., department_name: _Optional[str] = ..., queue: _Optional[str] = ..., priority: _Optional[str] = ..., due_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sla: _Optional[str] = ..., rule_id: _Optional[str] = ..., rule_set_version: _Optional[str] = ..., reasons: _Optional[_Iterable[str]] = ..., tags: _Optional[_Iterable[str]] = ..., triage_reason: _Optional[str] = ..., evaluations: _Optional[_Iterable[_Union[RuleEvaluation, _Mapping]]] = ..., time_zone: _Optional[str] = ...) -> None: ...

class ReloadRulesRequest(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class ReloadRulesResponse(_message.Message):
    __slots__ = ("rule_set_version", "previous_version")
    RULE_SET_VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    rule_set_version: str
    previous_version: str
    def __init__(self, rule_set_version: _Optional[str] = ..., previous_version: _Optional[str] = ...) -> None: ...
