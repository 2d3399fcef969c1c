import datetime

from civicflow.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetCaseRequest(_message.Message):
    __slots__ = ("tracking_number",)
    TRACKING_NUMBER_FIELD_NUMBER: _ClassVar[int]
    tracking_number: str
    def __init__(self, tracking_number: _Optional[str] = ...) -> None: ...

class TimelineEntry(_message.Message):
    __slots__ = ("stage", "at", "detail")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    stage: str
    at: _timestamp_pb2.Timestamp
    detail: str
    def __init__(self, stage: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., detail: _Optional[str] = ...) -> None: ...

class CaseView(_message.Message):
    __slots__ = ("tracking_number", "service_code", "status", "department_id", "department_name", "submitted_at", "due_at", "priority", "rule_id", "work_order_id", "resolution", "location", "timeline", "time_zone", "point_source", "unplaced", "satisfaction")
    TRACKING_NUMBER_FIELD_NUMBER: _ClassVar[int]
    SERVICE_CODE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DEPARTMENT_ID_FIELD_NUMBER: _ClassVar[int]
    DEPARTMENT_NAME_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    DUE_AT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    WORK_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    TIMELINE_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    POINT_SOURCE_FIELD_NUMBER: _ClassVar[int]
    UNPLACED_FIELD_NUMBER: _ClassVar[int]
    SATISFACTION_FIELD_NUMBER: _ClassVar[int]
    tracking_number: str
    service_code: str
    status: str
    department_id: str
    department_name: str
    submitted_at: _timestamp_pb2.Timestamp
    due_at: _timestamp_pb2.Timestamp
    priority: str
    rule_id: str
    work_order_id: str
    resolution: str
    location: _common_pb2.Location
    timeline: _containers.RepeatedCompositeFieldContainer[TimelineEntry]
    time_zone: str
    point_source: str
    unplaced: str
    satisfaction: int
    def __init__(self, tracking_number: _Optional[str] = ..., service_code: _Optional[str] = ..., status: _Optional[str] = ..., department_id: _Optional[str] = ..., department_name: _Optional[str] = ..., submitted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., due_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., priority: _Optional[str] = ..., rule_id: _Optional[str] = ..., work_order_id: _Optional[str] = ..., resolution: _Optional[str] = ..., location: _Optional[_Union[_common_pb2.Location, _Mapping]] = ..., timeline: _Optional[_Iterable[_Union[TimelineEntry, _Mapping]]] = ..., time_zone: _Optional[str] = ..., point_source: _Optional[str] = ..., unplaced: _Optional[str] = ..., satisfaction: _Optional[int] = ...) -> None: ...
