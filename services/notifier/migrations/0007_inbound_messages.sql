-- notifier: inbound texts answered, once each. The provider retries a text it got no answer for, and its
-- signature carries no time, so a captured signed request can be sent again: a second arrival of the same
-- MessageSid is answered with the reply stored here and changes nothing (no second ResidentReplied, no
-- replayed START re-subscribing a number that has texted STOP since). Neither the number nor the text is
-- kept: only the provider's sid and what we texted back.
CREATE TABLE notifier.inbound_messages (
    message_sid text        PRIMARY KEY,
    reply       text,
    received_at timestamptz NOT NULL DEFAULT now()
);
