"""A SAMPLE Open311 GeoReport v2 server, standing in for a department's work-order system in development and tests.

Not part of civicflow and never for production: it exists so `civicflow dev` and the tests can open, follow and
cancel service requests through the real protocol without a real department. It speaks JSON and XML (the
suffix: `.json`, `.xml`) and keeps everything in memory, with each request also written, readable, to
``<state>/open311/<id>.json``:

- ``GET  /services.{fmt}`` its services (codes "4" pothole … "23" bins, as a department numbers them);
- ``POST /requests.{fmt}`` opens a request (form: api_key, jurisdiction_id, service_code, description, lat/long
  or address_string, attribute[…]); the api_key is CIVICFLOW_OPEN311_API_KEY (in development one kept under the
  state folder, civicflow/secrets.py); answers the id, or a token when CIVICFLOW_SAMPLE_OPEN311_TOKEN_SECONDS is
  0 or more (the id shows at ``GET /tokens/{token}.{fmt}`` after that many seconds);
- ``GET  /requests.{fmt}?service_request_id=a,b,c`` (or start_date, end_date, status), ``GET /requests/{id}.{fmt}``,
  and, the sample's own extension, ``GET /requests.{fmt}?attribute[civicflow_key]=KEY``: the requests opened
  with that key (the client looks there before opening again; like a real server, a POST is never refused
  for a key already used);
- ``GET  /servicerequestupdates.{fmt}?start_date=…&end_date=…`` (mySociety's extension) the feed of status changes;
  ``POST /servicerequestupdates.{fmt}`` a client's update (civicflow's cancellation), once per update_id, not
  put in the feed; CIVICFLOW_SAMPLE_OPEN311_UPDATES_ENDPOINT=false answers 404 to both, as a plain server;
- ``POST /sample/requests/{id}/status`` (JSON ``{"status": …, "note": …}``) is the department's staff moving a
  request (``civicflow open311 set ID STATUS``); ``GET /sample/requests/{id}`` shows it with what was posted;
  ``POST /sample/faults`` (``{"lose_next_answers": N}``) takes the next N requests and loses their answers (502).

For tests it can speak as the servers that get GeoReport wrong: CIVICFLOW_SAMPLE_OPEN311_OBJECTS (JSON always
wrapped, one record as an object instead of a list), CIVICFLOW_SAMPLE_OPEN311_NAIVE_ZONE (times without a zone,
written in that IANA zone), CIVICFLOW_SAMPLE_OPEN311_XML_ONLY (``.json`` answers 404).

Each new request moves open -> investigating -> action_scheduled -> fixed, one step every
CIVICFLOW_SAMPLE_OPEN311_STEP_SECONDS (0: never), until staff move it by hand. Times are to the second, as many
servers stamp them, so updates share instants. Run it with ``python -m samples.open311_department``.
"""
