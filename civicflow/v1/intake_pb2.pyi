import datetime

from civicflow.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ContactChannel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTACT_CHANNEL_UNSPECIFIED: _ClassVar[ContactChannel]
    CONTACT_CHANNEL_EMAIL: _ClassVar[ContactChannel]
    CONTACT_CHANNEL_SMS: _ClassVar[ContactChannel]
    CONTACT_CHANNEL_VOICE: _ClassVar[ContactChannel]
    CONTACT_CHANNEL_NONE: _ClassVar[ContactChannel]

class ContactUpdates(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTACT_UPDATES_UNSPECIFIED: _ClassVar[ContactUpdates]
    CONTACT_UPDATES_ALL: _ClassVar[ContactUpdates]
    CONTACT_UPDATES_OUTCOME: _ClassVar[ContactUpdates]
CONTACT_CHANNEL_UNSPECIFIED: ContactChannel
CONTACT_CHANNEL_EMAIL: ContactChannel
CONTACT_CHANNEL_SMS: ContactChannel
CONTACT_CHANNEL_VOICE: ContactChannel
CONTACT_CHANNEL_NONE: ContactChannel
CONTACT_UPDATES_UNSPECIFIED: ContactUpdates
CONTACT_UPDATES_ALL: ContactUpdates
CONTACT_UPDATES_OUTCOME: ContactUpdates

class ResidentContact(_message.Message):
    __slots__ = ("name", "email", "phone", "preferred_channel", "language", "updates")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    PHONE_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_CHANNEL_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    name: str
    email: str
    phone: str
    preferred_channel: ContactChannel
    language: str
    updates: ContactUpdates
    def __init__(self, name: _Optional[str] = ..., email: _Optional[str] = ..., phone: _Optional[str] = ..., preferred_channel: _Optional[_Union[ContactChannel, str]] = ..., language: _Optional[str] = ..., updates: _Optional[_Union[ContactUpdates, str]] = ...) -> None: ...

class SubmitRequestRequest(_message.Message):
    __slots__ = ("service_code", "description", "location", "contact", "idempotency_key", "channel", "attributes", "flags")
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
    CONTACT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    service_code: str
    description: str
    location: _common_pb2.Location
    contact: ResidentContact
    idempotency_key: str
    channel: str
    attributes: _containers.ScalarMap[str, str]
    flags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, service_code: _Optional[str] = ..., description: _Optional[str] = ..., location: _Optional[_Union[_common_pb2.Location, _Mapping]] = ..., contact: _Optional[_Union[ResidentContact, _Mapping]] = ..., idempotency_key: _Optional[str] = ..., channel: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., flags: _Optional[_Iterable[str]] = ...) -> None: ...

class SubmitRequestResponse(_message.Message):
    __slots__ = ("tracking_number", "case_id", "submitted_at", "replayed")
    TRACKING_NUMBER_FIELD_NUMBER: _ClassVar[int]
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    tracking_number: str
    case_id: str
    submitted_at: _timestamp_pb2.Timestamp
    replayed: bool
    def __init__(self, tracking_number: _Optional[str] = ..., case_id: _Optional[str] = ..., submitted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class RecategoriseCaseRequest(_message.Message):
    __slots__ = ("tracking_number", "service_code", "reason")
    TRACKING_NUMBER_FIELD_NUMBER: _ClassVar[int]
    SERVICE_CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    tracking_number: str
    service_code: str
    reason: str
    def __init__(self, tracking_number: _Optional[str] = ..., service_code: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RecategoriseCaseResponse(_message.Message):
    __slots__ = ("previous_service_code",)
    PREVIOUS_SERVICE_CODE_FIELD_NUMBER: _ClassVar[int]
    previous_service_code: str
    def __init__(self, previous_service_code: _Optional[str] = ...) -> None: ...
