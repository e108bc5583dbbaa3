"""`larder up` / `larder down`: the whole demo on one machine, every process tracked by pid.

`up` starts memcached for each local region, builds the dbt project and materializes every asset
once (recorded in the Dagster instance under DAGSTER_HOME, so the UI shows it), creates a demo API
key, starts the API for each region (gunicorn) and the Dagster UI (dagster-webserver and
dagster-daemon as separate processes, so they can be stopped), then prints where to look.
`down` stops what `up` started, by the pid files under $LARDER_HOME/run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from orchestration.config.load import Project, larder_home, load_project

DAGSTER_PORT = 3000
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
READY_TIMEOUT_SECONDS = 180
REPO_ROOT = Path(__file__).resolve().parents[1]
DAGSTER_INSTANCE_YAML = """\
# Written by `larder up`. One run at a time: DuckDB has a single writer. Dequeue every second
# (default 5) so a sync follows its dbt model quickly.
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 1
    dequeue_interval_seconds: 1
telemetry:
  enabled: false
"""


@dataclass(frozen=True)
class Paths:
    home: Path

    @property
    def run(self) -> Path:
        return self.home / "run"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def dagster_home(self) -> Path:
        return Path(os.environ.get("DAGSTER_HOME") or self.home / "dagster")

    @property
    def demo_key(self) -> Path:
        return self.home / "demo-api-key"

    def pid_file(self, name: str) -> Path:
        return self.run / f"{name}.pid"


def up(*, detach: bool = False, config: Path | None = None) -> int:
    """Start everything; on any failure, stop what was started before re-raising."""
    down(quiet=True)
    try:
        return _up(detach=detach, config=config)
    except BaseException:
        down(quiet=True)
        raise


def _up(*, detach: bool, config: Path | None) -> int:
    paths = Paths(larder_home())
    for folder in (paths.home, paths.run, paths.logs, paths.dagster_home):
        folder.mkdir(parents=True, exist_ok=True)
    project = load_project(config)
    env = _child_env(project, paths)
    os.environ.update(env)

    _say("starting memcached for each region")
    for region, server in _local_memcached_servers(project):
        _start_memcached(paths, region, server)

    _say("building dbt models and materializing every asset (dbt → models → collections)")
    _materialize_everything(project, paths)
    _rehydrate_all(project)
    secret = _demo_key(project, paths)

    _say("starting the API for each region and the Dagster UI")
    for region in project.enabled_regions:
        _spawn(paths, f"api-{region}", [sys.executable, "-m", "orchestration.cli", "serve", "--region", region], env)
    workspace = str(REPO_ROOT / "workspace.yaml")
    _spawn(paths, "dagster-webserver",
           [_bin("dagster-webserver"), "-h", "127.0.0.1", "-p", str(DAGSTER_PORT), "-w", workspace], env)
    _spawn(paths, "dagster-daemon", [_bin("dagster-daemon"), "run", "-w", workspace], env)
    for region in project.enabled_regions:
        spec = project.regions[region]
        _wait_for_http(f"http://{spec.host}:{spec.port}/readyz", f"API {region}")
    _wait_for_http(f"http://127.0.0.1:{DAGSTER_PORT}/server_info", "Dagster UI")
    _print_banner(project, secret, paths)
    if detach:
        return 0
    return _wait_for_interrupt()


def down(*, quiet: bool = False) -> int:
    paths = Paths(larder_home())
    stopped = []
    for pid_file in sorted(paths.run.glob("*.pid")) if paths.run.exists() else []:
        name = pid_file.stem
        try:
            pid = int(pid_file.read_text().strip())
        except ValueError:
            pid_file.unlink(missing_ok=True)
            continue
        if _stop_process_group(pid):
            stopped.append(name)
        pid_file.unlink(missing_ok=True)
    if not quiet:
        print(f"larder: stopped {', '.join(stopped)}" if stopped else "larder: nothing was running")
    return 0


def _child_env(project: Project, paths: Paths) -> dict[str, str]:
    env = {
        "LARDER_CONFIG": str(project.path.resolve()),
        "LARDER_HOME": str(paths.home),
        "DAGSTER_HOME": str(paths.dagster_home),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    url = project.spec.warehouse.url
    if url.startswith("duckdb:///"):
        env["LARDER_WAREHOUSE_PATH"] = str(Path(url.removeprefix("duckdb:///")).resolve())
    return env


def _local_memcached_servers(project: Project) -> list[tuple[str, str]]:
    servers = []
    for region in project.enabled_regions:
        for server in project.regions[region].servers:
            host = server.rpartition(":")[0]
            if host in LOCAL_HOSTS:
                servers.append((region, server))
    return servers


def _start_memcached(paths: Paths, region: str, server: str) -> None:
    binary = shutil.which("memcached")
    if binary is None:
        raise SystemExit("larder: memcached is not installed; `make run` installs it with apt-get (needs root)")
    host, _, port = server.rpartition(":")
    command = [binary, "-l", host, "-p", port, "-m", "256", "-U", "0"]
    if os.geteuid() == 0:
        command += ["-u", "root"]  # memcached refuses to run as root without it
    _spawn(paths, f"memcached-{region}-{port}", command, {})
    _wait_for_port(host, int(port), f"memcached {server}")


def _materialize_everything(project: Project, paths: Paths) -> None:
    import dagster as dg

    from orchestration.definitions import build_definitions
    from orchestration.jobs import run_bootstrap

    (paths.dagster_home / "dagster.yaml").write_text(DAGSTER_INSTANCE_YAML)
    defs = build_definitions(project)
    instance = dg.DagsterInstance.get()
    quiet_logs = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    if not run_bootstrap(defs, instance, quiet_logs).success:
        raise SystemExit("larder: materializing the assets failed; see the run in the Dagster UI or the log above")


def _rehydrate_all(project: Project) -> None:
    from orchestration.sync import Services, rehydrate_region

    services = Services(project)
    try:
        for region in project.enabled_regions:
            rehydrate_region(services, region)
    finally:
        services.close()


def _demo_key(project: Project, paths: Paths) -> str:
    """Reuse the demo key from a previous run if still active; otherwise create one."""
    from orchestration.store.state import StateStore, split_secret

    state = StateStore(project.spec.state.url)
    state.create_all()
    try:
        if paths.demo_key.exists():
            secret = paths.demo_key.read_text().strip()
            active = {key.prefix for key in state.list_keys(include_revoked=False)}
            if split_secret(secret) in active:
                return secret
        _, secret = state.create_key(f"demo-{int(time.time())}")
    finally:
        state.dispose()
    paths.demo_key.write_text(secret + "\n")
    paths.demo_key.chmod(0o600)
    return secret


def _spawn(paths: Paths, name: str, command: list[str], env: dict[str, str]) -> None:
    log = open(paths.logs / f"{name}.log", "ab")
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: `down` stops it and its children together
    )
    paths.pid_file(name).write_text(f"{process.pid}\n")


def _stop_process_group(pid: int, timeout: float = 15.0) -> bool:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            _reap(pid)
            return True
        _reap(pid)
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _reap(pid)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _wait_for_port(host: str, port: int, what: str, timeout: float = 15.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.3):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"larder: {what} did not start listening on {host}:{port}; see {larder_home() / 'logs'}")


def _wait_for_http(url: str, what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"larder: {what} is not ready at {url}; see {larder_home() / 'logs'}")


def _bin(name: str) -> str:
    beside_python = Path(sys.executable).with_name(name)
    return str(beside_python) if beside_python.exists() else name


def _print_banner(project: Project, secret: str, paths: Paths) -> None:
    first = project.enabled_regions[0]
    api = f"http://{project.regions[first].host}:{project.regions[first].port}"
    lines = [
        "",
        "Larder is running.",
        "",
        "  Jane Doe's profile, by user_id and by email (identical records):",
        f"    curl -s -H 'Authorization: Bearer {secret}' {api}/v1/collections/customers/records/user_id/12345",
        f"    curl -s -H 'Authorization: Bearer {secret}' {api}/v1/collections/customers/records/email/jane.doe@example.com",
        "",
        "  APIs by region: " + ", ".join(
            f"{r} http://{project.regions[r].host}:{project.regions[r].port}" for r in project.enabled_regions
        ),
        f"  Dagster UI:     http://127.0.0.1:{DAGSTER_PORT}  (assets, syncs, checks, schedules, sensors)",
        f"  Demo API key:   {paths.demo_key}",
        f"  Logs:           {paths.logs}",
        "",
        "  Ctrl-C (or `make stop`) stops every process started here.",
        "",
    ]
    print("\n".join(lines), flush=True)


def _wait_for_interrupt() -> int:
    stop = False

    def request_stop(signum, frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    while not stop:
        time.sleep(0.5)
    print("\nlarder: stopping", flush=True)
    return down()


def _say(message: str) -> None:
    print(f"larder: {message}", flush=True)
