-- The store's ordered tables as rows: `tbl` names the table (tenants,
-- users, audit, …; keys and journal in the key store's own relation), `k`
-- the key (tenant id first, so a tenant is one range), `v` the record,
-- personal fields in it sealed by the control plane before they get here.
-- bytea compares byte by byte, as RocksDB orders keys.
CREATE TABLE IF NOT EXISTS {rel} (
    tbl text NOT NULL,
    k bytea NOT NULL,
    v bytea NOT NULL,
    PRIMARY KEY (tbl, k)
);
