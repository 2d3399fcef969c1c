"""A SAMPLE department work-order system, standing in for a city department's own software.

Not part of civicflow: it exists so `civicflow dev` and the tests have something real to open work
orders in. It speaks REST with signed webhooks, the way many department systems do:

- ``POST /departments/{department_id}/work-orders`` with an ``Idempotency-Key`` header opens a work
  order (201), or returns the one already opened under that key (200);
- ``GET /departments/{department_id}/work-orders/{id}`` shows it;
- a simulated crew then moves it open -> in_progress -> done, and each change is POSTed to the
  request's ``callback_url``, signed ``X-Civicflow-Signature: sha256=<hmac of the raw body>``.

State is kept in memory. Run it with ``python -m samples.department_workorders.app`` (entry point
``samples.department_workorders.app:main``).
"""
