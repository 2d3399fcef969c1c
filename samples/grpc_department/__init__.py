"""A SAMPLE department integration, standing in for a city department's own software that talks to civicflow
over gRPC (proto/civicflow/v1/work_orders.proto, WorkOrderSync).

Not part of civicflow: it exists so `civicflow dev` and the tests have a real client of the grpc connector.
With its client key (scope ``workorders:<department_id>``) it pulls the department's work orders and
cancellations with the WorkOrders stream, keeps each work order as a readable JSON file under
``<state>/grpc_department/<department_id>/``, acknowledges what it stored, and moves each work order
acknowledged -> in_progress -> resolved, one step every ``CIVICFLOW_SAMPLE_GRPC_STEP_SECONDS``, reporting
each step with ReportStatus. Run it with ``python -m samples.grpc_department``.
"""
