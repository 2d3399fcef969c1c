"""Status reports in a department's words (RecordUpdate) recorded through today's StatusReportRecorder, whose
vocabulary is the sample REST system's four statuses. Interim: updates.py's recorder, which records our whole
vocabulary, replaces this module and the one line in main.py's bootstrap that makes it."""

from __future__ import annotations

from collections.abc import Mapping

from civicflow.department_systems import ConnectorSpec
from services.workorder_bridge.connector import ExternalUpdate, Outcome
from services.workorder_bridge.domain import StatusReport, WorkOrderStatus
from services.workorder_bridge.webhook import StatusRecorder

# ours -> the webhook's four; everything else is work going on
_FOUR: dict[str, WorkOrderStatus] = {
    "open": "open",
    "resolved": "done",
    "closed": "done",
    "not_our_responsibility": "rejected",
}
MAX_NOTE = 2000


class StatusReportsInTheirWords:
    def __init__(self, recorder: StatusRecorder, specs: Mapping[str, ConnectorSpec]) -> None:
        self._recorder = recorder
        self._specs = specs

    async def __call__(self, department_id: str, update: ExternalUpdate) -> Outcome:
        ours = self._specs[department_id].ours(update.status)
        status = _FOUR.get(ours or "", "in_progress")
        note = update.note
        if ours is None or (status == "in_progress" and ours != "in_progress"):
            said = f"(their status: {update.status})"  # what the four cannot say, kept in words
            note = f"{note} {said}" if note else said
        report = StatusReport(
            external_id=update.external_id,
            department_id=department_id,
            status=status,
            note=note[:MAX_NOTE] if note else None,
            changed_at=update.changed_at,
        )
        return await self._recorder(report)
