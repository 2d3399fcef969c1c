"""workorder_bridge: opens a work order in the responsible department's own system for each routed case,
and turns that system's signed status webhooks into WorkOrderStatusChanged and CaseResolved events."""
