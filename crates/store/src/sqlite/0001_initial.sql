-- Weir's store, version 1. Times are milliseconds since the Unix epoch.

-- A series is a metric and its labels (canonical JSON, keys sorted),
-- interned once; `gpu_uuid` copies the UUID label for GPU lookups.
CREATE TABLE series (
    id       INTEGER PRIMARY KEY,
    metric   TEXT NOT NULL,
    labels   TEXT NOT NULL,
    gpu_uuid TEXT,
    UNIQUE (metric, labels)
);
CREATE INDEX series_by_gpu ON series (gpu_uuid) WHERE gpu_uuid IS NOT NULL;

-- The natural key (series, ts) makes a redelivered sample harmless.
CREATE TABLE samples (
    series_id INTEGER NOT NULL REFERENCES series (id),
    ts        INTEGER NOT NULL,
    value     REAL    NOT NULL,
    PRIMARY KEY (series_id, ts)
) WITHOUT ROWID;

CREATE TABLE gpus (
    uuid       TEXT PRIMARY KEY,
    gpu_index  INTEGER,
    device     TEXT,
    model      TEXT,
    host       TEXT,
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
);

CREATE TABLE job_results (
    job_id      TEXT    NOT NULL,
    pow         INTEGER NOT NULL,
    tam         INTEGER NOT NULL,
    init        REAL    NOT NULL,
    comp        REAL    NOT NULL,
    fim         REAL    NOT NULL,
    tot         REAL    NOT NULL,
    engine      TEXT    NOT NULL,
    threads     INTEGER NOT NULL,
    correct     INTEGER NOT NULL,
    generations INTEGER NOT NULL,
    worker      TEXT    NOT NULL,
    finished_at INTEGER NOT NULL,
    PRIMARY KEY (job_id, pow)
);
CREATE INDEX job_results_by_time ON job_results (finished_at);

CREATE TABLE job_failures (
    job_id    TEXT PRIMARY KEY,
    reason    TEXT NOT NULL,
    error     TEXT NOT NULL,
    worker    TEXT NOT NULL,
    job       TEXT NOT NULL,
    failed_at INTEGER NOT NULL
);

-- Resource usage for analytics: (order, task or service, resource, host,
-- ts, value), names in lookup tables. `order_id` is '' for a service
-- outside any order; `host` '' when the sample names none (a task running
-- on several hosts has a row per host).
CREATE TABLE tasks (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE resources (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE resource_usage (
    order_id    TEXT    NOT NULL,
    task_id     INTEGER NOT NULL REFERENCES tasks (id),
    resource_id INTEGER NOT NULL REFERENCES resources (id),
    host        TEXT    NOT NULL,
    ts          INTEGER NOT NULL,
    value       REAL    NOT NULL,
    PRIMARY KEY (order_id, task_id, resource_id, host, ts)
) WITHOUT ROWID;
CREATE VIEW resource_usage_named AS
    SELECT u.order_id, t.name AS task, r.name AS resource, u.host, u.ts, u.value
    FROM resource_usage u
    JOIN tasks t ON t.id = u.task_id
    JOIN resources r ON r.id = u.resource_id;
