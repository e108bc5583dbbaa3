"""The asset graph's names: one function per kind of asset, so every module keys them alike.

The UI labels a node with the last part of its key, so each kind ends its own way: the dbt model
`customer_profiles`, the Larder model `customer_profiles_model` (what a sync reads), the sync
`customer_profiles_sync`, and the collection `customers` its syncs feed.
"""

import dagster as dg

from orchestration.config.specs import SyncSpec

DBT_KEY_PREFIX = "dbt"
MODEL_KEY_PREFIX = "model"
SYNC_KEY_PREFIX = "sync"
COLLECTION_KEY_PREFIX = "collection"


def dbt_model_key(model_name: str) -> dg.AssetKey:
    return dg.AssetKey([DBT_KEY_PREFIX, model_name])


def model_name(spec: SyncSpec) -> str:
    """dbt models keep their name; inline SQL models are named after their sync."""
    return spec.model.dbt if spec.model.dbt is not None else f"{spec.name}_sql"


def model_key(spec: SyncSpec) -> dg.AssetKey:
    return dg.AssetKey([MODEL_KEY_PREFIX, f"{model_name(spec)}_model"])


def sync_key(spec: SyncSpec) -> dg.AssetKey:
    return dg.AssetKey([SYNC_KEY_PREFIX, f"{spec.name}_sync"])


def collection_key(collection: str) -> dg.AssetKey:
    return dg.AssetKey([COLLECTION_KEY_PREFIX, collection])


def sync_op_name(spec: SyncSpec) -> str:
    """The op the launchpad's config names (`ops: {<this>: {config: ...}}`)."""
    return sync_key(spec).to_python_identifier()
