"""The record store contracts shared by the sync engine (writer) and the API (reader).

- `keys`: the Memcached key layout, and how index values become text.
- `envelope`: how a record is encoded as a Memcached value.
- `cache`: `RecordCache`, one region's Memcached pool.
- `state`: the durable state (SQLAlchemy), one module per table family behind the `StateStore` facade.
"""
