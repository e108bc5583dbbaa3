"""The Dagster resource that hands the sync engine its project and connections."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import dagster as dg

from orchestration.config.load import Project, load_project
from orchestration.sync import Services


class LarderResource(dg.ConfigurableResource):
    """Where the Larder project lives; empty means $LARDER_CONFIG or orchestration/larder.yaml."""

    config_path: str = ""

    def load(self) -> Project:
        return load_project(self.config_path or None)

    @contextmanager
    def services(self) -> Iterator[Services]:
        services = Services(self.load())
        try:
            yield services
        finally:
            services.close()
