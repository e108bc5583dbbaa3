"""Typed configuration of a Larder project: larder.yaml, sync files and dbt meta."""

from orchestration.config.load import ConfigError, Project, default_config_path, load_project
from orchestration.config.specs import (
    CollectionSpec,
    DeleteBehaviour,
    FieldSpec,
    FieldType,
    ProjectSpec,
    RegionSpec,
    SyncSpec,
)

__all__ = [
    "CollectionSpec",
    "ConfigError",
    "DeleteBehaviour",
    "FieldSpec",
    "FieldType",
    "Project",
    "ProjectSpec",
    "RegionSpec",
    "SyncSpec",
    "default_config_path",
    "load_project",
]
