"""The connector kinds a department can name in the city file (civicflow/department_systems.py), each in a
module of its own with a `build(context) -> Connector`. This table is the one place a kind is registered."""

from __future__ import annotations

from collections.abc import Callable

from services.workorder_bridge.connector import Connector, ConnectorContext
from services.workorder_bridge.kinds import email, grpc, open311, rest_webhook

Builder = Callable[[ConnectorContext], Connector]

BUILDERS: dict[str, Builder] = {
    "rest_webhook": rest_webhook.build,
    "grpc": grpc.build,
    "open311": open311.build,
    "email": email.build,
}
