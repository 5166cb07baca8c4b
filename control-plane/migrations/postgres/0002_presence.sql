-- Short-lived state every replica must see (what relays reported in the
-- last seconds; see store/presence.rs). Unlogged: not in the WAL, so not
-- on a streaming replica either, and empty after a crash or a failover —
-- relays report again within seconds. `put_at` and `expires_at` are the
-- database's clock, the same for every replica. Keys compare byte by byte
-- so that a tenant's or a site's entries are one range of the key.
CREATE UNLOGGED TABLE IF NOT EXISTS {rel}_presence (
    kind text NOT NULL,
    k text COLLATE "C" NOT NULL,
    v bytea NOT NULL,
    put_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (kind, k)
);
CREATE INDEX IF NOT EXISTS {rel}_presence_expiry ON {rel}_presence (expires_at);
