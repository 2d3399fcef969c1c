from civicflow.v1 import intake_pb2 as _intake_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SetPreferencesRequest(_message.Message):
    __slots__ = ("tracking_number", "preferred_channel", "language", "updates")
    TRACKING_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_CHANNEL_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    tracking_number: str
    preferred_channel: _intake_pb2.ContactChannel
    language: str
    updates: _intake_pb2.ContactUpdates
    def __init__(self, tracking_number: _Optional[str] = ..., preferred_channel: _Optional[_Union[_intake_pb2.ContactChannel, str]] = ..., language: _Optional[str] = ..., updates: _Optional[_Union[_intake_pb2.ContactUpdates, str]] = ...) -> None: ...

class SetPreferencesResponse(_message.Message):
    __slots__ = ("preferred_channel", "language", "updates")
    PREFERRED_CHANNEL_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    preferred_channel: str
    language: str
    updates: str
    def __init__(self, preferred_channel: _Optional[str] = ..., language: _Optional[str] = ..., updates: _Optional[str] = ...) -> None: ...
