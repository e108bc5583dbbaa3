"""`larder up` / `larder down` / `larder watch`: a whole Larder project on one machine, every process tracked by pid.

`up` starts memcached for each local region, builds the dbt project and materializes every asset
once (recorded in the Dagster instance, so the UI shows it), creates a local API key, then starts
the API for each region (gunicorn), one Dagster code server, dagster-webserver and dagster-daemon
(both reading the code server, so one reload reaches both) and `larder watch`, and prints where to
look. Any project runs this way (`--config`); the demo is the default.

Runtime files live in the project's runtime folder (`$LARDER_HOME`, else `.larder/` beside
larder.yaml; the demo's is `.larder/` at the repository root): pid files under `run/`, logs under
`logs/`, the Dagster instance under `dagster/`. Two projects (or two runtime folders) on one
machine run side by side when their ports differ.

`down` stops what `up` started, from any terminal: it signals every process group it finds in
`run/` (and `up` itself, which then exits), waits for them together and kills what is left after
STOP_SECONDS.

`watch` (started by `up`) reloads Dagster's code location through the webserver's GraphQL API when
the project's files change (larder.yaml, sync files, the dbt manifest) and the new configuration
loads: new syncs and collections appear in the UI without "Reload definitions". The API reloads
by itself (serving/reload.py).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import orjson

from orchestration.config.load import DEMO_CONFIG, Project, default_config_path, home_for, load_project
from orchestration.machine import executable, free_port, host_port, wait_for_port

DAGSTER_PORT = 3000
CODE_LOCATION = "larder"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
READY_TIMEOUT_SECONDS = 180
# `down` waits this long for every process to exit after SIGTERM, then kills what is left.
STOP_SECONDS = 7.0
DEFAULT_INSTANCE = Path(__file__).resolve().parent / "dagster.yaml"
UP = "up"  # the pid file of `larder up` itself

RELOAD_LOCATION = """
mutation Reload($name: String!) {
  reloadRepositoryLocation(repositoryLocationName: $name) {
    __typename
    ... on WorkspaceLocationEntry {
      locationOrLoadError { __typename ... on PythonError { message } }
    }
    ... on PythonError { message }
  }
}
"""

log = logging.getLogger("larder.watch")


class StopRequested(Exception):
    """`larder down` (SIGTERM) or Ctrl-C arrived while `up` was still starting."""


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
        return self.home / "dagster"

    @property
    def workspace(self) -> Path:
        return self.run / "workspace.yaml"

    @property
    def demo_key(self) -> Path:
        return self.home / "demo-api-key"

    def pid_file(self, name: str) -> Path:
        return self.run / f"{name}.pid"


def up(*, config: Path | None = None, dagster_port: int = DAGSTER_PORT, detach: bool = False) -> int:
    """Start everything; on any failure (or a stop request while starting), stop what was started."""
    config = _use_config(config)
    paths = Paths(home_for(config))
    down(config=config, quiet=True)
    for folder in (paths.home, paths.run, paths.logs, paths.dagster_home):
        folder.mkdir(parents=True, exist_ok=True)
    previous = signal.signal(signal.SIGTERM, _raise_stop_requested)
    paths.pid_file(UP).write_text(f"{os.getpid()}\n")
    try:
        _up(config, paths, dagster_port)
        if detach:
            paths.pid_file(UP).unlink(missing_ok=True)
            signal.signal(signal.SIGTERM, previous)
            return 0
        _wait_until_stopped(paths)
        code = 0
    except StopRequested:  # `larder down` from another terminal: a clean stop
        code = 0
    except KeyboardInterrupt:  # Ctrl-C
        code = 130
    except BaseException:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        down(config=config, quiet=True)
        raise
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second stop request must not cut the cleanup short
    print("\nlarder: stopping", flush=True)
    down(config=config)
    signal.signal(signal.SIGTERM, previous)
    return code


def down(*, config: Path | None = None, quiet: bool = False) -> int:
    """Stop every process `up` started for this project's runtime folder, and `up` itself."""
    paths = Paths(home_for(_use_config(config)))
    started = _read_pid_files(paths)
    up_pid = started.pop(UP, None)
    if up_pid is not None and (up_pid == os.getpid() or not _is_larder_up(up_pid)):
        up_pid = None  # ourselves, or a stale pid file whose number another process now has
    if up_pid is not None:
        _signal(up_pid, signal.SIGTERM, group=False)  # `up` stops its children too and exits
    for pid in started.values():
        _signal(pid, signal.SIGTERM, group=True)
    deadline = time.monotonic() + STOP_SECONDS
    while time.monotonic() < deadline and _still_running(started, up_pid):
        _reap_children()
        time.sleep(0.2)
    live = _live_groups(started.values())
    for pid in started.values():
        if pid in live:
            _signal(pid, signal.SIGKILL, group=True)
    _reap_children()
    if up_pid is not None:
        _wait_for_exit(up_pid, STOP_SECONDS)
    for name in [*started, UP]:
        paths.pid_file(name).unlink(missing_ok=True)
    if not quiet:
        print(f"larder: stopped {', '.join(started)}" if started else "larder: nothing was running", flush=True)
    return 0


def watch(*, config: Path | None = None, dagster_url: str, interval: float = 1.0) -> int:
    """Reload Dagster's code location whenever the project's files change and still load."""
    from orchestration.config.changes import ProjectWatcher

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    watcher = ProjectWatcher(load_project(_use_config(config)), lambda p: reload_code_location(dagster_url, p))
    log.info("watching %s for changes; Dagster at %s", watcher.project.path, dagster_url)
    while True:
        time.sleep(interval)
        try:
            watcher.check()
        except Exception:  # the webserver may be restarting: the next change tries again
            log.exception("reloading Dagster's code location failed")


def reload_code_location(dagster_url: str, project: Project | None = None) -> None:
    """Ask dagster-webserver to reload the code location (the code server loads the new configuration)."""
    body = orjson.dumps({"query": RELOAD_LOCATION, "variables": {"name": CODE_LOCATION}})
    request = urllib.request.Request(f"{dagster_url}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        answer = orjson.loads(response.read())
    result = (answer.get("data") or {}).get("reloadRepositoryLocation") or {}
    error = result.get("message") or (result.get("locationOrLoadError") or {}).get("message") or answer.get("errors")
    if result.get("__typename") != "WorkspaceLocationEntry" or error:
        raise RuntimeError(f"Dagster did not reload code location {CODE_LOCATION!r}: {error or result}")
    if project is not None:
        log.info("Dagster reloaded code location %r: %d syncs", CODE_LOCATION, len(project.syncs))


def _use_config(config: Path | None) -> Path:
    """The project's larder.yaml, made absolute (the child processes get it as $LARDER_CONFIG)."""
    return Path(config).resolve() if config is not None else default_config_path().resolve()


def _up(config: Path, paths: Paths, dagster_port: int) -> None:
    project = load_project(config)
    env = _child_env(project, paths)
    _check_ports_free(project, dagster_port)

    _say("starting memcached for each region")
    for region, server in _local_memcached_servers(project):
        _start_memcached(paths, region, server)

    _say("building dbt models and materializing every asset (dbt → models → collections)")
    _write_instance(project, paths)
    _materialize_everything(project, paths)
    # Dagster's in-process execution leaves SIGTERM mapped to SIGINT's handler: take it back.
    signal.signal(signal.SIGTERM, _raise_stop_requested)
    _rehydrate_all(project)
    secret = _local_key(project, paths)

    _say("starting the API for each region and the Dagster UI")
    for region in project.enabled_regions:
        _spawn(paths, f"api-{region}", [sys.executable, "-m", "orchestration.cli", "serve", "--region", region], env)
    code_port = free_port()
    paths.workspace.write_text(
        f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {code_port}\n"
        f"      location_name: {CODE_LOCATION}\n"
    )
    _spawn(paths, "dagster-code-server",
           [executable("dagster"), "code-server", "start", "-m", "orchestration.definitions", "--location-name", CODE_LOCATION,
            "-h", "127.0.0.1", "-p", str(code_port)], env)
    _wait_for_port("127.0.0.1", code_port, "the Dagster code server", paths, timeout=READY_TIMEOUT_SECONDS)
    workspace = str(paths.workspace)
    _spawn(paths, "dagster-webserver",
           [executable("dagster-webserver"), "-h", "127.0.0.1", "-p", str(dagster_port), "-w", workspace], env)
    _spawn(paths, "dagster-daemon", [executable("dagster-daemon"), "run", "-w", workspace], env)
    dagster_url = f"http://127.0.0.1:{dagster_port}"
    _spawn(paths, "watch", [sys.executable, "-m", "orchestration.cli", "watch", "--dagster-url", dagster_url], env)
    for region in project.enabled_regions:
        spec = project.regions[region]
        _wait_for_http(f"http://{spec.host}:{spec.port}/readyz", f"API {region}", paths)
    _wait_for_http(f"{dagster_url}/server_info", "Dagster UI", paths)
    _print_banner(project, secret, paths, dagster_url)


def _child_env(project: Project, paths: Paths) -> dict[str, str]:
    # No LARDER_WAREHOUSE_PATH: Dagster's dbt builds are told the warehouse file (assets/dbt.py).
    return {
        "LARDER_CONFIG": str(project.path.resolve()),
        "LARDER_HOME": str(paths.home),
        "DAGSTER_HOME": str(paths.dagster_home),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def _check_ports_free(project: Project, dagster_port: int) -> None:
    """Fail before starting anything when another stack (or anything else) holds a port this one needs."""
    wanted = [(project.regions[r].host, project.regions[r].port, f"API {r}") for r in project.enabled_regions]
    wanted += [(*host_port(server), f"memcached {server} of region {region}")
               for region, server in _local_memcached_servers(project)]
    wanted.append(("127.0.0.1", dagster_port, "Dagster UI (--dagster-port)"))
    for host, port, what in wanted:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                raise SystemExit(f"larder: {host}:{port}, for the {what}, is already in use "
                                 f"(another stack? set other ports in {project.path} or pass --dagster-port)") from None


def _local_memcached_servers(project: Project) -> list[tuple[str, str]]:
    servers = []
    for region in project.enabled_regions:
        for server in project.regions[region].servers:
            if host_port(server)[0] in LOCAL_HOSTS:
                servers.append((region, server))
    return servers


def _start_memcached(paths: Paths, region: str, server: str) -> None:
    binary = shutil.which("memcached")
    if binary is None:
        raise SystemExit("larder: memcached is not installed; `make run` installs it with apt-get (needs root)")
    host, port = host_port(server)
    command = [binary, "-l", host, "-p", str(port), "-m", "256", "-U", "0"]
    if os.geteuid() == 0:
        command += ["-u", "root"]  # memcached refuses to run as root without it
    _spawn(paths, f"memcached-{region}-{port}", command, {})
    _wait_for_port(host, port, f"memcached {server}", paths)


def _write_instance(project: Project, paths: Paths) -> None:
    """DAGSTER_HOME/dagster.yaml: the project's own dagster.yaml (beside larder.yaml), else the default."""
    own = project.path.parent / "dagster.yaml"
    shutil.copyfile(own if own.exists() else DEFAULT_INSTANCE, paths.dagster_home / "dagster.yaml")


def _materialize_everything(project: Project, paths: Paths) -> None:
    import dagster as dg

    from orchestration.definitions import build_definitions
    from orchestration.jobs import run_bootstrap

    defs = build_definitions(project)
    instance = dg.DagsterInstance.from_config(str(paths.dagster_home.resolve()))
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


def _local_key(project: Project, paths: Paths) -> str:
    """Reuse the key of a previous run (kept in the runtime folder) if still active; otherwise create one."""
    from orchestration.store.state import StateStore, split_secret

    state = StateStore(project.spec.state.url)
    state.create_all()
    try:
        if paths.demo_key.exists():
            secret = paths.demo_key.read_text().strip()
            active = {key.prefix for key in state.list_keys(include_revoked=False)}
            if split_secret(secret) in active:
                return secret
        _, secret = state.create_key(f"{'demo' if _is_demo(project) else 'local'}-{int(time.time())}")
    finally:
        state.dispose()
    paths.demo_key.write_text(secret + "\n")
    paths.demo_key.chmod(0o600)
    return secret


def _spawn(paths: Paths, name: str, command: list[str], env: dict[str, str]) -> None:
    log_file = open(paths.logs / f"{name}.log", "ab")
    process = subprocess.Popen(
        command,  # in `up`'s working directory: a relative path in a URL means the same to every process
        env={**os.environ, **env},
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: `down` stops it and its children together
    )
    log_file.close()
    paths.pid_file(name).write_text(f"{process.pid}\n")


# --- stopping -------------------------------------------------------------------------------------


def _raise_stop_requested(signum, frame):
    """SIGTERM, what `down` sends, stops `up` wherever it is (Ctrl-C raises KeyboardInterrupt as usual)."""
    raise StopRequested()


def _wait_until_stopped(paths: Paths) -> None:
    """Until a signal arrives (StopRequested), or `down` from elsewhere removed our pid file."""
    while paths.pid_file(UP).exists():
        _reap_children()
        time.sleep(0.5)


def _read_pid_files(paths: Paths) -> dict[str, int]:
    pids = {}
    for pid_file in sorted(paths.run.glob("*.pid")) if paths.run.exists() else []:
        try:
            pids[pid_file.stem] = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            pid_file.unlink(missing_ok=True)
    return pids


def _signal(pid: int, sig: int, *, group: bool) -> None:
    try:
        os.killpg(pid, sig) if group else os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _still_running(groups: dict[str, int], up_pid: int | None) -> bool:
    live = _live_groups(groups.values())
    if any(pid in live for pid in groups.values()):
        return True
    return up_pid is not None and _alive(up_pid)


def _is_larder_up(pid: int) -> bool:
    """Whether `pid` runs `larder up` (where /proc cannot tell, assume it does)."""
    if not Path("/proc").is_dir():
        return True
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return b"up" in arguments


def _live_groups(candidates=()) -> set[int]:
    """Process groups with a running member; zombies (exited, not yet reaped by their parent) do not count.

    One pass over /proc. Without /proc, each candidate group is probed with signal 0 (zombies count).
    """
    proc = Path("/proc")
    if not proc.is_dir():
        return {pgid for pgid in candidates if _probe_group(pgid)}
    live = set()
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()  # state, ppid, pgrp, … after "pid (comm)"
        except OSError:
            continue
        if fields[0] != "Z":
            live.add(int(fields[2]))
    return live


def _probe_group(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for_exit(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)


def _reap_children() -> None:
    """Collect exited children of this process, so none stays a zombie."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


# --- waiting and printing -------------------------------------------------------------------------


def _wait_for_port(host: str, port: int, what: str, paths: Paths, timeout: float = 15.0) -> None:
    try:
        wait_for_port(port, timeout, host)
    except TimeoutError:
        raise SystemExit(f"larder: {what} did not start listening on {host}:{port}; see {paths.logs}") from None


def _wait_for_http(url: str, what: str, paths: Paths) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"larder: {what} is not ready at {url}; see {paths.logs}")


def _is_demo(project: Project) -> bool:
    return project.path.resolve() == DEMO_CONFIG


def _print_banner(project: Project, secret: str, paths: Paths, dagster_url: str) -> None:
    first = project.enabled_regions[0]
    api = f"http://{project.regions[first].host}:{project.regions[first].port}"
    auth = f"-H 'Authorization: Bearer {secret}'"
    if _is_demo(project):
        examples = [
            "  Jane Doe's profile, by user_id and by email (identical records):",
            f"    curl -s {auth} {api}/v1/collections/customers/records/user_id/12345",
            f"    curl -s {auth} {api}/v1/collections/customers/records/email/jane.doe@example.com",
        ]
    else:
        examples = ["  A record of each collection:", *(f"    curl -s {auth} {api}{path}" for path in _example_paths(project))]
    lines = [
        "",
        "Larder is running.",
        "",
        *examples,
        "",
        "  APIs by region: " + ", ".join(
            f"{r} http://{project.regions[r].host}:{project.regions[r].port}" for r in project.enabled_regions
        ),
        f"  Dagster UI:     {dagster_url}  (assets, syncs, checks, schedules, sensors)",
        f"  API key:        {paths.demo_key}",
        f"  Logs:           {paths.logs}",
        "",
        "  Edit larder.yaml, a sync file or dbt meta (then `dbt parse`): the API and Dagster reload by themselves.",
        "  Ctrl-C (or `larder down" + ("" if _is_demo(project) else f" --config {project.path}") + "`) stops every process started here.",
        "",
    ]
    print("\n".join(lines), flush=True)


def _example_paths(project: Project) -> list[str]:
    """A lookup of the first record of each collection (by its primary index), from the state."""
    from urllib.parse import quote

    from orchestration.store.state import StateStore

    state = StateStore(project.spec.state.url)
    paths = []
    try:
        for collection in project.collection_names:
            primary = project.primary_index_of(collection)
            first = next(iter(state.iter_collection_pks(collection, batch=1)), [])
            if primary and first:
                paths.append(f"/v1/collections/{collection}/records/{primary}/{quote(str(first[0]), safe='')}")
    finally:
        state.dispose()
    return paths or ["/v1/collections"]


def _say(message: str) -> None:
    print(f"larder: {message}", flush=True)
