"""A SAMPLE department work-order system, standing in for a city department's own software.

Not part of civicflow: it exists so `civicflow dev` and the tests have something real to open work
orders in. It speaks REST with signed webhooks, the way many department systems do:

- ``POST /departments/{department_id}/work-orders`` with an ``Idempotency-Key`` header opens a work
  order (201), or returns the one already opened under that key (200);
- ``GET /departments/{department_id}/work-orders[/{id}]`` lists them or shows one;
- ``POST /departments/{department_id}/work-orders/{id}/cancel`` with an ``Idempotency-Key`` and
  ``{"reason": …}`` cancels it (200 however often; 409 once it is finished another way): its crew stops and
  it shows ``cancelled``;
- ``POST /departments/{department_id}/work-orders/{id}/status`` with ``{"status", "note", "refers_to"}``
  moves it by hand to any status, as staff would (or ``python -m samples.department_workorders set-status
  DEPARTMENT WORK_ORDER STATUS --note …``);
- ``POST /departments/{department_id}/work-orders/{id}/lose[?keep_key=true]`` makes it forget the work order and
  the key that opened it, as a system that lost data would (to show civicflow reading it back and opening it
  again); ``GET …/work-orders/{id}`` then answers 404;
- ``GET /healthz`` answers while it runs;
- a simulated crew moves each new work order open -> in_progress -> resolved (or not_our_responsibility,
  for the departments and services CIVICFLOW_SAMPLE_DEPT_TURNS_DOWN names), and each change is POSTed to the
  request's ``callback_url`` with ``X-Civicflow-Timestamp: <unix seconds>`` and
  ``X-Civicflow-Signature: sha256=<hmac of "<timestamp>." and the raw body>``, with the department's own webhook
  secret; the body carries the status in this system's words (civicflow's vocabulary here) and an ``update_id``
  per change.

It serves every department, so it derives each one's webhook secret from the bridge's signing secret, which it
reads as the bridge does (civicflow/secrets.py): a development convenience only. A real department's system is
given its own secret and nothing else (`civicflow departments secret DEPARTMENT`).

State is kept in memory. Run it with ``python -m samples.department_workorders`` (entry point
``samples.department_workorders.app:main``).
"""
