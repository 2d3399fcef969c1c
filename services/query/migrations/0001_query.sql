-- query: the case read model and its timeline. Disposable: `civicflow replay query` rebuilds it.
CREATE SCHEMA IF NOT EXISTS query;
CREATE TABLE query.cases (
    case_id          uuid PRIMARY KEY,
    tracking_number  text UNIQUE,
    service_code     text,
    status           text        NOT NULL,
    department_id    text,
    department_name  text,
    priority         text,
    rule_id          text,
    submitted_at     timestamptz,
    due_at           timestamptz,
    work_order_id    text,
    resolution       text,
    lat              double precision,
    long             double precision,
    address          text,
    last_version     integer     NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE TABLE query.timeline (
    case_id  uuid        NOT NULL,
    version  integer     NOT NULL,
    stage    text        NOT NULL,
    at       timestamptz NOT NULL,
    detail   text        NOT NULL,
    PRIMARY KEY (case_id, version)
);
CREATE TABLE query.inbox (
    event_id     uuid PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);
