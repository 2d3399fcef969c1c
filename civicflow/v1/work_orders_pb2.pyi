import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WorkOrderStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORK_ORDER_STATUS_UNSPECIFIED: _ClassVar[WorkOrderStatus]
    WORK_ORDER_STATUS_OPEN: _ClassVar[WorkOrderStatus]
    WORK_ORDER_STATUS_ACKNOWLEDGED: _ClassVar[WorkOrderStatus]
    WORK_ORDER_STATUS_IN_PROGRESS: _ClassVar[WorkOrderStatus]
    WORK_ORDER_STATUS_ACTION_SCHEDULED: _ClassVar[WorkOrderStatus]
    WORK_ORDER_STATUS_RESOLVED: _ClassVar[WorkOrderStatus]
    WORK_ORDER_STATUS_CLOSED: _ClassVar[WorkOrderStatus]
    WORK_ORDER_STATUS_DUPLICATE: _ClassVar[WorkOrderStatus]
    WORK_ORDER_STATUS_NOT_OUR_RESPONSIBILITY: _ClassVar[WorkOrderStatus]
    WORK_ORDER_STATUS_INTERNAL_REFERRAL: _ClassVar[WorkOrderStatus]
    WORK_ORDER_STATUS_REOPENED: _ClassVar[WorkOrderStatus]
    WORK_ORDER_STATUS_CANCELLED: _ClassVar[WorkOrderStatus]
WORK_ORDER_STATUS_UNSPECIFIED: WorkOrderStatus
WORK_ORDER_STATUS_OPEN: WorkOrderStatus
WORK_ORDER_STATUS_ACKNOWLEDGED: WorkOrderStatus
WORK_ORDER_STATUS_IN_PROGRESS: WorkOrderStatus
WORK_ORDER_STATUS_ACTION_SCHEDULED: WorkOrderStatus
WORK_ORDER_STATUS_RESOLVED: WorkOrderStatus
WORK_ORDER_STATUS_CLOSED: WorkOrderStatus
WORK_ORDER_STATUS_DUPLICATE: WorkOrderStatus
WORK_ORDER_STATUS_NOT_OUR_RESPONSIBILITY: WorkOrderStatus
WORK_ORDER_STATUS_INTERNAL_REFERRAL: WorkOrderStatus
WORK_ORDER_STATUS_REOPENED: WorkOrderStatus
WORK_ORDER_STATUS_CANCELLED: WorkOrderStatus

class WorkOrder(_message.Message):
    __slots__ = ("external_id", "tracking_number", "service_code", "summary", "due_at", "priority", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    TRACKING_NUMBER_FIELD_NUMBER: _ClassVar[int]
    SERVICE_CODE_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    DUE_AT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    external_id: str
    tracking_number: str
    service_code: str
    summary: str
    due_at: _timestamp_pb2.Timestamp
    priority: str
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, external_id: _Optional[str] = ..., tracking_number: _Optional[str] = ..., service_code: _Optional[str] = ..., summary: _Optional[str] = ..., due_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., priority: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Cancellation(_message.Message):
    __slots__ = ("external_id", "reason")
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    external_id: str
    reason: str
    def __init__(self, external_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class WorkOrderMessage(_message.Message):
    __slots__ = ("sequence", "message_id", "created_at", "work_order", "cancellation")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    WORK_ORDER_FIELD_NUMBER: _ClassVar[int]
    CANCELLATION_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    message_id: str
    created_at: _timestamp_pb2.Timestamp
    work_order: WorkOrder
    cancellation: Cancellation
    def __init__(self, sequence: _Optional[int] = ..., message_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., work_order: _Optional[_Union[WorkOrder, _Mapping]] = ..., cancellation: _Optional[_Union[Cancellation, _Mapping]] = ...) -> None: ...

class WorkOrdersRequest(_message.Message):
    __slots__ = ("department_id",)
    DEPARTMENT_ID_FIELD_NUMBER: _ClassVar[int]
    department_id: str
    def __init__(self, department_id: _Optional[str] = ...) -> None: ...

class AcknowledgeRequest(_message.Message):
    __slots__ = ("department_id", "sequence")
    DEPARTMENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    department_id: str
    sequence: int
    def __init__(self, department_id: _Optional[str] = ..., sequence: _Optional[int] = ...) -> None: ...

class AcknowledgeResponse(_message.Message):
    __slots__ = ("acknowledged", "latest")
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    LATEST_FIELD_NUMBER: _ClassVar[int]
    acknowledged: int
    latest: int
    def __init__(self, acknowledged: _Optional[int] = ..., latest: _Optional[int] = ...) -> None: ...

class ReportStatusRequest(_message.Message):
    __slots__ = ("department_id", "external_id", "their_status", "our_status", "changed_at", "note", "update_id", "refers_to")
    DEPARTMENT_ID_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    THEIR_STATUS_FIELD_NUMBER: _ClassVar[int]
    OUR_STATUS_FIELD_NUMBER: _ClassVar[int]
    CHANGED_AT_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_ID_FIELD_NUMBER: _ClassVar[int]
    REFERS_TO_FIELD_NUMBER: _ClassVar[int]
    department_id: str
    external_id: str
    their_status: str
    our_status: WorkOrderStatus
    changed_at: _timestamp_pb2.Timestamp
    note: str
    update_id: str
    refers_to: str
    def __init__(self, department_id: _Optional[str] = ..., external_id: _Optional[str] = ..., their_status: _Optional[str] = ..., our_status: _Optional[_Union[WorkOrderStatus, str]] = ..., changed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., note: _Optional[str] = ..., update_id: _Optional[str] = ..., refers_to: _Optional[str] = ...) -> None: ...

class ReportStatusResponse(_message.Message):
    __slots__ = ("outcome", "our_status")
    class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OUTCOME_UNSPECIFIED: _ClassVar[ReportStatusResponse.Outcome]
        OUTCOME_RECORDED: _ClassVar[ReportStatusResponse.Outcome]
        OUTCOME_DUPLICATE: _ClassVar[ReportStatusResponse.Outcome]
        OUTCOME_OUTDATED: _ClassVar[ReportStatusResponse.Outcome]
        OUTCOME_HELD: _ClassVar[ReportStatusResponse.Outcome]
    OUTCOME_UNSPECIFIED: ReportStatusResponse.Outcome
    OUTCOME_RECORDED: ReportStatusResponse.Outcome
    OUTCOME_DUPLICATE: ReportStatusResponse.Outcome
    OUTCOME_OUTDATED: ReportStatusResponse.Outcome
    OUTCOME_HELD: ReportStatusResponse.Outcome
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    OUR_STATUS_FIELD_NUMBER: _ClassVar[int]
    outcome: ReportStatusResponse.Outcome
    our_status: str
    def __init__(self, outcome: _Optional[_Union[ReportStatusResponse.Outcome, str]] = ..., our_status: _Optional[str] = ...) -> None: ...
