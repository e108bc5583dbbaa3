"""The sync engine: model rows → mapped records → diff → durable state and every region's cache.

Plain Python, no Dagster or Falcon: `run_sync` and `rehydrate_region` are its entry points.
"""

from orchestration.sync.engine import Services, SyncFailed, SyncReport, rehydrate_region, run_sync

__all__ = ["Services", "SyncFailed", "SyncReport", "rehydrate_region", "run_sync"]
