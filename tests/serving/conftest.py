"""A real serving stack: DuckDB customers table → run_sync → memcached → gunicorn (`larder serve`).

`stack` is shared by the tests that leave it as they found it (a stack takes seconds to start);
tests that change data for good, revoke keys or stop memcached use `fresh_stack`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import orjson
import pytest
import requests

from orchestration.config.load import REPO_ROOT
from orchestration.store.state import StateStore
from orchestration.sync import Services, run_sync
from tests.support import JANE_RECOMMENDATIONS, MemcachedProcess, ProjectFactory, free_port

# (id, email, full_name, recommendations): emails exercise unicode, spaces and '/' in URLs.
CUSTOMERS = [
    (12345, "jane@example.com", "Jane Doe", JANE_RECOMMENDATIONS),
    (2, "zoë müller@example.com", "Zoë Müller", {"concerts": []}),
    (3, "a/b@example.com", "Slash Person", {"concerts": []}),
    (4, "plain+tag@example.com", "Tag Person", {"concerts": []}),
]

# Named as in the Braze page's example URL: /v1/collections/customer/records/id/12345
CUSTOMER_SYNC = {
    "name": "customer_profiles",
    "description": "Customers for send-time personalization.",
    "owners": ["crm@example.com"],
    "model": {"sql": "select * from customers"},
    "collection": "customer",
    "primary_index": "id",
    "indices": ["email"],
    "fields": [
        {"column": "id"},
        {"column": "email"},
        {"column": "full_name"},
        {"column": "recommendations", "type": "json"},
        {"to": "first_name", "liquid": "{{ full_name | split: ' ' | first }}", "type": "string"},
    ],
    "delete": "delete",
}
ORDERS_SYNC = {
    "name": "orders",
    "model": {"sql": "select 1 as order_id, 'open' as status"},
    "collection": "orders",
    "primary_index": "order_id",
    "fields": [{"column": "order_id"}, {"column": "status"}],
}


def write_customers(warehouse: Path, rows) -> None:
    """(Re)create the customers table the sync reads; a str recommendation is written as it is."""
    with duckdb.connect(str(warehouse)) as conn:
        conn.execute(
            "create or replace table customers (id integer, email varchar, full_name varchar, recommendations varchar)"
        )
        conn.executemany(
            "insert into customers values (?, ?, ?, ?)",
            [(i, e, n, r if isinstance(r, str) else orjson.dumps(r).decode()) for i, e, n, r in rows],
        )


def _children(pid: int | str) -> list[str]:
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


def gunicorn_workers(serve: int) -> list[str]:
    """The gunicorn workers under a `larder serve` process (whose children are nginx and the
    gunicorn master); empty while the master is not up."""
    master = next((child for child in _children(serve)
                   if b"gunicorn" in Path(f"/proc/{child}/cmdline").read_bytes()), None)
    return _children(master) if master is not None else []


class ApiServer:
    """`larder serve --region R` as a subprocess on a free port."""

    def __init__(self, config: Path, region: str, log: Path, *, workers: int = 2):
        self.config = config
        self.region = region
        self.log = log
        self.workers = workers
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "orchestration.cli", "--config", str(self.config), "serve",
                 "--region", self.region, "--bind", f"127.0.0.1:{self.port}", "--workers", str(self.workers)],
                env=env, stdout=log, stderr=log,
            )
        try:
            self._wait_until_serving()
        except BaseException:
            self.stop()
            raise

    def _wait_until_serving(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log.read_text()[-2000:]}")
            try:
                if requests.get(f"{self.base}/healthz", timeout=1).status_code == 200 and self._workers_ready():
                    return
            except requests.RequestException:  # not listening yet, or workers still importing
                pass
            time.sleep(0.05)
        raise TimeoutError(f"gunicorn did not answer: {self.log.read_text()[-2000:]}")

    def _workers_ready(self) -> bool:
        """Every gunicorn worker has built the app: it runs a thread of the app's besides its own (the
        app loads the keys before it starts any). Linux's /proc tells."""
        try:
            workers = gunicorn_workers(self.process.pid)
            return len(workers) == self.workers and all(
                len(list(Path(f"/proc/{worker}/task").iterdir())) >= 2 for worker in workers)
        except FileNotFoundError:  # a process exited meanwhile
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=15)
            self.process = None


class Stack:
    """A project with synced customers, two regions' memcached, a key, and region us served."""

    def __init__(self, root: Path, *, state_url: str | None = None, api_state_url: str | None = None,
                 workers: int = 2):
        """`state_url` is the state the syncs write (SQLite by default); the API reads it through
        `api_state_url` when given (a proxy in front of the same database)."""
        self.root = root
        self.warehouse = root / "warehouse.duckdb"
        self.us, self.eu = MemcachedProcess(), MemcachedProcess()
        self.factory = ProjectFactory(root, warehouse_url=f"duckdb:///{self.warehouse}",
                                      state_url=state_url or f"sqlite:///{root / 'state.db'}")
        self.api_state_url = api_state_url
        self.workers = workers
        self.servers: list[ApiServer] = []

    def start(self, *, api: dict | None = None) -> Stack:
        try:
            return self._start(api or {})
        except BaseException:
            self.stop()
            raise

    def _start(self, api: dict) -> Stack:
        self.us.start()
        self.eu.start()
        write_customers(self.warehouse, CUSTOMERS)
        self.project = self._write_project(self.factory, api)
        self.api_project = self.project
        if self.api_state_url:
            api_root = self.root / "api"
            api_root.mkdir(exist_ok=True)
            self.api_project = self._write_project(
                ProjectFactory(api_root, warehouse_url=self.factory.warehouse_url, state_url=self.api_state_url), api)
        self.state = StateStore(self.project.spec.state.url)
        self.state.create_all()
        self.sync()
        self.sync("orders")
        self.key = self.create_key("all")
        self.api = self.serve("us")
        return self

    def _write_project(self, factory: ProjectFactory, api: dict):
        return factory(
            [CUSTOMER_SYNC, ORDERS_SYNC],
            regions={"us": [self.us.server], "eu": [self.eu.server]},
            collections={"customer": {"description": "One profile per customer.", "max_age": 600}},
            # The demo dbt project declares customer_engagement (collection `customers`) in its meta:
            # its lineage reaches upstream dbt nodes. That sync is never run here.
            extra={"dbt": {"project_dir": str(REPO_ROOT / "dbt_project")}, **({"api": api} if api else {})},
        )

    def sync(self, name: str = "customer_profiles"):
        services = Services(self.project)
        try:
            return run_sync(services, name, origin="test")
        finally:
            services.close()

    def create_key(self, name: str, **scope) -> str:
        return self.state.create_key(name, **scope)[1]

    def statuses(self, path: str, key: str | None = None, server: ApiServer | None = None, n: int = 16) -> list[int]:
        """Status codes of `n` concurrent requests: with several in flight, every worker answers some."""
        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(lambda _: self.get(path, key=key, server=server).status_code, range(n)))

    def wait_for_key(self, secret: str, server: ApiServer | None = None) -> None:
        """Until every worker accepts a new key (each reloads keys within 2 s, the default)."""
        deadline = time.monotonic() + 5
        while 401 in self.statuses("/v1/collections", key=secret, server=server):
            assert time.monotonic() < deadline, "a new key was not accepted within 5 s"
            time.sleep(0.2)

    def serve(self, region: str) -> ApiServer:
        server = ApiServer(self.api_project.path, region, self.root / f"gunicorn-{region}.log", workers=self.workers)
        server.start()
        self.servers.append(server)
        return server

    def get(self, path: str, key: str | None = None, server: ApiServer | None = None, **kwargs) -> requests.Response:
        return self.request("GET", path, key, server, **kwargs)

    def request(self, method: str, path: str, key: str | None = None, server: ApiServer | None = None, **kwargs):
        headers = {"Authorization": f"Bearer {key or self.key}", **kwargs.pop("headers", {})}
        return requests.request(method, f"{(server or self.api).base}{path}", headers=headers, timeout=10, **kwargs)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        if hasattr(self, "state"):
            self.state.dispose()
        self.us.stop()
        self.eu.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    # Every test here calls from 127.0.0.1, many with keys not loaded yet or wrong on purpose: the
    # brake on invalid keys per address (tested on a stack of its own) must not trip across tests.
    running = Stack(tmp_path_factory.mktemp("stack")).start(api={"invalid_keys_per_minute": 1_000_000})
    yield running
    running.stop()


@pytest.fixture
def fresh_stack(tmp_path):
    running = Stack(tmp_path).start()
    yield running
    running.stop()
