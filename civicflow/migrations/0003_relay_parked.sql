-- Events the relay could not publish (too large for the broker, or refused for what they are), set aside
-- so the events after them still flow. The event itself stays in events.case_events; this row says why it
-- is not on the topic. Publish it again by hand once the cause is fixed (e.g. the broker's limit raised).
CREATE TABLE events.relay_parked (
    topic       text        NOT NULL,
    position    bigint      NOT NULL,
    event_id    uuid        NOT NULL,
    case_id     uuid        NOT NULL,
    event_type  text        NOT NULL,
    size_bytes  integer     NOT NULL,
    -- the kind of error and the broker's or client's words about size or format; never the payload
    error       text        NOT NULL,
    parked_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, position)
);
