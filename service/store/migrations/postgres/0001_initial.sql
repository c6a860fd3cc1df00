-- The catalog of record on PostgreSQL: the tables of the SQLite schema (version 2), plus
-- items.change_seq (the log entry of the item's last write: "oldest write first" order).
-- Sequence numbers of both logs are taken under the store's write lock, so they commit in
-- order (service/store/postgres.py).

CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);
INSERT INTO meta VALUES ('store_id', replace(gen_random_uuid()::text, '-', ''));

CREATE TABLE item_changes (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    item_id text NOT NULL,
    vector bytea,
    bundle_version text,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE items (
    item_id text PRIMARY KEY,
    fields json NOT NULL,
    image bytea NOT NULL,
    vector bytea NOT NULL,
    bundle_version text NOT NULL,
    created_at timestamptz NOT NULL,
    change_seq bigint NOT NULL
);
CREATE INDEX items_by_bundle_version ON items (bundle_version);

CREATE TABLE deleted_items (item_id text PRIMARY KEY, deleted_at timestamptz NOT NULL DEFAULT now());

CREATE TABLE interactions (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id text NOT NULL,
    item_id text NOT NULL,
    vector bytea NOT NULL,
    bundle_version text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX interactions_by_user ON interactions (user_id);

CREATE TABLE idempotency_keys (
    key text PRIMARY KEY,
    fingerprint text NOT NULL,
    status integer NOT NULL,
    body json NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
