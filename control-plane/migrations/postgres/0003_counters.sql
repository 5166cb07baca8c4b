-- Counters in fixed windows (rate limits; see store/presence.rs, `count`).
-- Unlogged like presence: after a crash or a failover every window starts
-- again, which costs an attacker's budget at most one window.
CREATE UNLOGGED TABLE IF NOT EXISTS {rel}_counters (
    kind text NOT NULL,
    k text COLLATE "C" NOT NULL,
    hits bigint NOT NULL,
    window_end timestamptz NOT NULL,
    PRIMARY KEY (kind, k)
);
CREATE INDEX IF NOT EXISTS {rel}_counters_end ON {rel}_counters (window_end);
