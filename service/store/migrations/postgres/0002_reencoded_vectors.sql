-- Rolling bundle upgrades: an item written under one bundle version is re-encoded by each other
-- version in use, once, as one more item_changes entry whose source_seq is the write it encoded
-- (items.change_seq then). The unique index keeps that once, whichever replica re-encodes.

ALTER TABLE item_changes ADD COLUMN source_seq bigint;
CREATE UNIQUE INDEX item_changes_reencoded ON item_changes (source_seq, bundle_version)
    WHERE source_seq IS NOT NULL;
