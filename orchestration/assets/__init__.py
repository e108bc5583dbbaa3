"""Dagster assets: dbt models, Larder models (what a sync reads) and collections (what it writes)."""
