"""Larder's control plane: configuration, the sync engine, the record store and the Dagster code location.

`orchestration.config`, `orchestration.store` and `orchestration.sync` are plain Python (no Dagster
imports) so the API process and the CLI can use them without loading Dagster.
"""
