-- cbt-collector schema version 1.
-- Applied in one transaction by `cbt-collector` (see src/db.rs); never edit
-- a released migration: add the next one.

-- Upload tokens: only the SHA-256 of the token is kept.
CREATE TABLE tokens (
    id          bigserial PRIMARY KEY,
    agent       text        NOT NULL,
    hash        bytea       NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX tokens_agent ON tokens (agent);

-- The practices a token may send (besides `Unassigned`, always allowed).
CREATE TABLE token_practices (
    token_id    bigint NOT NULL REFERENCES tokens (id) ON DELETE CASCADE,
    practice    text   NOT NULL,
    PRIMARY KEY (token_id, practice)
);
CREATE INDEX token_practices_practice ON token_practices (practice);

-- One day document per (agent, practice, local date): the highest revision
-- received. `body` is the document exactly as the agent sent it (it passed
-- DayDocument::parse); the other columns are read from it, for the status
-- page, the metrics and the submission's checks.
CREATE TABLE documents (
    agent                 text             NOT NULL,
    practice              text             NOT NULL,
    day                   date             NOT NULL,
    revision              bigint           NOT NULL,
    is_final              boolean          NOT NULL,
    content_hash          bytea            NOT NULL,
    body                  text             NOT NULL,
    token_id              bigint           NOT NULL REFERENCES tokens (id),
    agent_version         text             NOT NULL,
    timezone              text             NOT NULL,
    generated_at          timestamptz      NOT NULL,
    wait_edges            integer[]        NOT NULL,
    duration_edges        integer[]        NOT NULL,
    region_code           text,
    icb_code              text,
    sub_icb_location_code text,
    pcn_code              text,
    calls                 bigint           NOT NULL,
    reconcile_error       text,
    partial_calls         bigint           NOT NULL,
    gap_minutes           double precision NOT NULL,
    hours_without_capture integer          NOT NULL,
    partial_view_hours    integer          NOT NULL,
    parse_error_share     double precision NOT NULL,
    packets_dropped       bigint           NOT NULL,
    b2bua_ambiguous       bigint           NOT NULL,
    duplicates            bigint           NOT NULL DEFAULT 0,
    first_received_at     timestamptz      NOT NULL DEFAULT now(),
    received_at           timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (agent, practice, day)
);
CREATE INDEX documents_day ON documents (day);
CREATE INDEX documents_practice_day ON documents (practice, day);

-- NHS England's participation list, per month (the first day of the month).
CREATE TABLE participation (
    month       date NOT NULL,
    practice    text NOT NULL,
    PRIMARY KEY (month, practice)
);

CREATE TABLE participation_imports (
    month       date        PRIMARY KEY,
    imported_at timestamptz NOT NULL DEFAULT now(),
    source      text        NOT NULL,
    practices   integer     NOT NULL
);

-- Every request to POST /v1/days (and refused ping), whatever its result.
CREATE TABLE audit (
    id              bigserial   PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    remote          inet,
    token_id        bigint,
    agent           text,
    practice        text,
    day             date,
    revision        bigint,
    idempotency_key text,
    status          smallint    NOT NULL,
    result          text        NOT NULL,
    reason          text
);
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_practice ON audit (practice, at);
