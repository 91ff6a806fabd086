-- Weir's store, version 1, PostgreSQL flavour of sqlite/0001_initial.sql:
-- the same tables and columns. Times are TIMESTAMPTZ (Weir writes whole
-- milliseconds); text that is sorted or keyed on compares bytewise
-- (COLLATE "C"), as in SQLite and Rust, whatever the database's locale.

-- A series is a metric and its labels, interned once; `gpu_uuid` copies
-- the UUID label for GPU lookups.
CREATE TABLE series (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    metric   TEXT COLLATE "C" NOT NULL,
    labels   JSONB NOT NULL,
    gpu_uuid TEXT COLLATE "C",
    UNIQUE (metric, labels)
);
CREATE INDEX series_by_gpu ON series (gpu_uuid) WHERE gpu_uuid IS NOT NULL;

-- The natural key (series, ts) makes a redelivered sample harmless.
CREATE TABLE samples (
    series_id BIGINT           NOT NULL REFERENCES series (id),
    ts        TIMESTAMPTZ      NOT NULL,
    value     DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (series_id, ts)
);

CREATE TABLE gpus (
    uuid       TEXT COLLATE "C" PRIMARY KEY,
    gpu_index  BIGINT,
    device     TEXT,
    model      TEXT,
    host       TEXT,
    first_seen TIMESTAMPTZ NOT NULL,
    last_seen  TIMESTAMPTZ NOT NULL
);

CREATE TABLE job_results (
    job_id      TEXT COLLATE "C" NOT NULL,
    pow         BIGINT           NOT NULL,
    tam         BIGINT           NOT NULL,
    init        DOUBLE PRECISION NOT NULL,
    comp        DOUBLE PRECISION NOT NULL,
    fim         DOUBLE PRECISION NOT NULL,
    tot         DOUBLE PRECISION NOT NULL,
    engine      TEXT             NOT NULL,
    threads     BIGINT           NOT NULL,
    correct     BOOLEAN          NOT NULL,
    generations BIGINT           NOT NULL,
    worker      TEXT             NOT NULL,
    finished_at TIMESTAMPTZ      NOT NULL,
    PRIMARY KEY (job_id, pow)
);
CREATE INDEX job_results_by_time ON job_results (finished_at);

CREATE TABLE job_failures (
    job_id    TEXT COLLATE "C" PRIMARY KEY,
    reason    TEXT        NOT NULL,
    error     TEXT        NOT NULL,
    worker    TEXT        NOT NULL,
    job       TEXT        NOT NULL,
    failed_at TIMESTAMPTZ NOT NULL
);

-- Resource usage for analytics: (order, task or service, resource, ts,
-- value), names in lookup tables. `order_id` is '' for a service outside
-- any order.
CREATE TABLE tasks (
    id   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL UNIQUE
);
CREATE TABLE resources (
    id   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL UNIQUE
);
CREATE TABLE resource_usage (
    order_id    TEXT COLLATE "C" NOT NULL,
    task_id     BIGINT           NOT NULL REFERENCES tasks (id),
    resource_id BIGINT           NOT NULL REFERENCES resources (id),
    host        TEXT COLLATE "C" NOT NULL,
    ts          TIMESTAMPTZ      NOT NULL,
    value       DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (order_id, task_id, resource_id, host, ts)
);
CREATE VIEW resource_usage_named AS
    SELECT u.order_id, t.name AS task, r.name AS resource, u.host, u.ts, u.value
    FROM resource_usage u
    JOIN tasks t ON t.id = u.task_id
    JOIN resources r ON r.id = u.resource_id;
