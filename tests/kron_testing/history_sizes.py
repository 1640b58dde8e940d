"""How big a workflow history is: all its events, and its largest single payload (what Temporal's
2 MB blob limit and its 256 KB warning apply to)."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowHistory


@dataclass(frozen=True)
class HistorySize:
    events: int
    total_bytes: int  # the events as Temporal stores them (protobuf)
    largest_payload: int

    def __add__(self, other: HistorySize) -> HistorySize:
        return HistorySize(self.events + other.events, self.total_bytes + other.total_bytes,
                           max(self.largest_payload, other.largest_payload))


def history_size(history: WorkflowHistory) -> HistorySize:
    return HistorySize(
        events=len(history.events),
        total_bytes=sum(event.ByteSize() for event in history.events),
        largest_payload=max((_largest_payload(event) for event in history.events), default=0),
    )


def _largest_payload(message: Message) -> int:
    if isinstance(message, Payload):
        return message.ByteSize()
    largest = 0
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            items = [v for v in value.values() if isinstance(v, Message)]
        elif isinstance(value, Message):
            items = [value]
        else:  # a repeated field
            items = list(value)
        for item in items:
            largest = max(largest, _largest_payload(item))
    return largest
