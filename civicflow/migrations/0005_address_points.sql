-- The city's address points (its published address-point file), read into parts so services index them at
-- start without parsing: civicflow.address_points. Replaced whole by `civicflow addresses load`.
CREATE SCHEMA IF NOT EXISTS city;
CREATE TABLE city.address_points (
    row_number   integer          NOT NULL,  -- the row of the file it came from (1 = the header)
    address      text             NOT NULL,  -- as published
    name         text,                       -- a landmark's name (City Hall), when the file has one
    number       integer,                    -- the house number, read
    predir       text             NOT NULL DEFAULT '',
    street_name  text,                       -- NULL: a landmark whose address could not be read
    suffix       text             NOT NULL DEFAULT '',
    postdir      text             NOT NULL DEFAULT '',
    lat          double precision NOT NULL,
    long         double precision NOT NULL
);
-- Services read the whole table into memory; this index serves lookups by hand and by other tools.
CREATE INDEX address_points_street ON city.address_points (street_name, number);
-- Which file is loaded: `civicflow dev` loads the city's file again only when its digest changed.
CREATE TABLE city.address_file (
    only_one   boolean     PRIMARY KEY DEFAULT true CHECK (only_one),
    digest     text        NOT NULL,
    source     text        NOT NULL,
    points     integer     NOT NULL,
    loaded_at  timestamptz NOT NULL DEFAULT now()
);
