-- The case event store (system of record), the relay's durable cursor, and residents' sealing keys.
CREATE SCHEMA IF NOT EXISTS events;

CREATE TABLE events.case_events (
    position        bigserial PRIMARY KEY,
    event_id        uuid        NOT NULL UNIQUE,
    case_id         uuid        NOT NULL,
    version         integer     NOT NULL CHECK (version > 0),
    type            text        NOT NULL,
    schema_version  integer     NOT NULL,
    data            jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    occurred_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (case_id, version)
);
CREATE INDEX case_events_type_position ON events.case_events (type, position);

CREATE TABLE events.relay_cursor (
    topic        text PRIMARY KEY,
    position     bigint NOT NULL DEFAULT 0,
    -- where the last published event landed (partition, offset, event id)
    last_published jsonb,
    -- an event published before the previous broker check; if the broker no longer holds it, it lost data
    probe          jsonb,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- One key per case; deleting the row forgets the resident's contact details in every stored event.
CREATE TABLE events.case_keys (
    case_id     uuid PRIMARY KEY,
    wrapped_key bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
