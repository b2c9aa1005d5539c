-- The call log (ops side): every call the generator places, and what became of it.
-- Later flows count affected customers (failed/abandoned between incident and recovery) and
-- lost calls (answered here, call_id missing at the new primary) from this table.
CREATE TABLE IF NOT EXISTS calls_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    placed_at   timestamptz NOT NULL,
    caller_id   text NOT NULL,
    site        text,                 -- the site the DNS record named (NULL: no answer from DNS yet)
    outcome     text NOT NULL CHECK (outcome IN ('answered', 'failed', 'abandoned')),
    call_id     bigint,               -- the id the site acknowledged (answered calls only)
    latency_ms  integer,
    detail      text                  -- why a call failed, in a few words
);
CREATE INDEX IF NOT EXISTS calls_log_placed_at ON calls_log (placed_at);
CREATE INDEX IF NOT EXISTS calls_log_outcome ON calls_log (outcome, placed_at);
