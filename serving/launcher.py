"""A region's API as one supervised process tree: nginx in front of gunicorn.

    larder serve  (this process: the pid file, signals, companions such as the cache watcher)
      ├── gunicorn master ── sync workers    on a unix socket in a private runtime folder
      └── nginx master ── nginx worker       on the region's address, buffering every request

gunicorn's sync workers are the fastest way to serve a lookup (see gunicorn.conf.py) but give
each connection a process; nginx in front means only complete requests reach them. Signals:
TERM/INT/QUIT stop both (nginx first, finishing what is in flight), HUP reloads both, TTIN/TTOU
add or remove a gunicorn worker. If either exits on its own the other is stopped and this
process exits non-zero, for its supervisor (systemd, `larder up`) to see. Children get SIGTERM if
this process dies, so nothing is left behind.

`python -m serving.launcher --bind 127.0.0.1:8080 APP` serves any WSGI app this way (the
benchmark's bare app is measured behind the same proxy).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from serving.fallback import RUNTIME_ENV
from serving.proxy import NginxProcess, ProxyError, nginx_binary, render_config, split_bind

GUNICORN_CONF = Path(__file__).with_name("gunicorn.conf.py")
START_TIMEOUT_SECONDS = 60
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
PASSED_ON = (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)
_PR_SET_PDEATHSIG = 1


class Companion(Protocol):
    """Something that runs beside the servers while they are up (started once both answer)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class ServeError(RuntimeError):
    """The servers could not be started (the message says which and why)."""


def serve(app: str, *, bind: str, name: str = "api", workers: int | None = None, pid_file: str | None = None,
          env: dict[str, str] | None = None, companions: Sequence[Companion] = (),
          proxy_workers: int | str = 1) -> int:
    """Run gunicorn (`app`) behind nginx listening on `bind` until a stop signal; the exit code."""
    runtime = Path(tempfile.mkdtemp(prefix=f"larder-{name}-", dir=os.environ.get("LARDER_RUNTIME_DIR")))
    signals = _SignalQueue()
    gunicorn: subprocess.Popen | None = None
    nginx: NginxProcess | None = None
    started: list[Companion] = []
    try:
        nginx_binary()  # before anything starts: a clear error if it is missing
        if pid_file:
            Path(pid_file).write_text(f"{os.getpid()}\n")
        upstream = runtime / "gunicorn.sock"
        gunicorn = _start_gunicorn(app, upstream, workers, {**os.environ, **(env or {}), RUNTIME_ENV: str(runtime)})
        _wait_for(lambda: _accepts(socket.AF_UNIX, str(upstream)), gunicorn, "gunicorn")
        nginx = NginxProcess(runtime, render_config(listen=bind, upstream=upstream, runtime=runtime,
                                                    worker_processes=proxy_workers))
        nginx_process = nginx.start(preexec_fn=_die_with_parent)
        _wait_for(lambda: _accepts(*_connect_address(bind)), nginx_process, "nginx")
        for companion in companions:
            companion.start()
            started.append(companion)
        print(f"larder: {name} serving on {bind} (nginx → gunicorn {upstream})", file=sys.stderr, flush=True)
        return _supervise(gunicorn, nginx, nginx_process, signals)
    except (ServeError, ProxyError) as error:
        print(f"larder: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        for companion in reversed(started):
            companion.stop()
        if nginx is not None:
            nginx.stop()
        if gunicorn is not None:
            _stop_gunicorn(gunicorn)
        if pid_file:
            Path(pid_file).unlink(missing_ok=True)
        shutil.rmtree(runtime, ignore_errors=True)
        signals.restore()


def _supervise(gunicorn: subprocess.Popen, nginx: NginxProcess, nginx_process: subprocess.Popen,
               signals: _SignalQueue) -> int:
    while True:
        if gunicorn.poll() is not None:
            print(f"larder: gunicorn exited ({gunicorn.returncode}); stopping nginx", file=sys.stderr, flush=True)
            return gunicorn.returncode or 1
        if nginx_process.poll() is not None:
            print(f"larder: nginx exited ({nginx_process.returncode}); stopping gunicorn", file=sys.stderr, flush=True)
            return nginx_process.returncode or 1
        for signum in signals.drain():
            if signum in STOP_SIGNALS:
                return 0
            gunicorn.send_signal(signum)
            if signum == signal.SIGHUP:
                nginx.signal(signal.SIGHUP)
        time.sleep(0.1)


def _start_gunicorn(app: str, upstream: Path, workers: int | None, env: dict[str, str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "gunicorn", "--config", str(GUNICORN_CONF), "--bind", f"unix:{upstream}"]
    if workers:
        command += ["--workers", str(workers)]
    command.append(app)
    return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)


def _stop_gunicorn(gunicorn: subprocess.Popen) -> None:
    # TERM is gunicorn's graceful stop (graceful_timeout 10 s); KILL only if it overruns.
    for signum, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        if gunicorn.poll() is not None:
            return
        gunicorn.send_signal(signum)
        try:
            gunicorn.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _wait_for(ready, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not ready():
        if process.poll() is not None:
            raise ServeError(f"{what} exited with {process.returncode} while starting (its errors are above)")
        if time.monotonic() > deadline:
            raise ServeError(f"{what} did not start listening within {START_TIMEOUT_SECONDS} s")
        time.sleep(0.05)


def _accepts(family: int, address) -> bool:
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        try:
            probe.connect(address)
            return True
        except OSError:
            return False


def _connect_address(bind: str) -> tuple[int, object]:
    """Where to connect to reach `bind` (a wildcard host is reached on loopback)."""
    if bind.startswith("unix:"):
        return socket.AF_UNIX, bind.removeprefix("unix:")
    host, port = split_bind(bind)
    host = host.strip("[]")
    if ":" in host:
        return socket.AF_INET6, ("::1" if host == "::" else host, port)
    return socket.AF_INET, ("127.0.0.1" if host == "0.0.0.0" else host, port)


def _die_with_parent() -> None:
    """In a child before exec: SIGTERM it when this process dies, however it dies."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class _SignalQueue:
    """Signals received, handled by the supervision loop (not inside the handler)."""

    def __init__(self):
        self._pending: list[int] = []
        self._previous = {signum: signal.signal(signum, self._receive) for signum in STOP_SIGNALS + PASSED_ON}

    def _receive(self, signum, frame) -> None:
        self._pending.append(signum)

    def drain(self) -> list[int]:
        pending, self._pending = self._pending, []
        return pending

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.launcher", description=__doc__.split("\n\n")[0])
    parser.add_argument("app", help="the WSGI app, as gunicorn takes it (module:callable)")
    parser.add_argument("--bind", required=True, help="host:port nginx listens on")
    parser.add_argument("--workers", type=int, help="gunicorn workers (default: gunicorn.conf.py's)")
    parser.add_argument("--pid", help="pid file")
    parser.add_argument("--name", default="api", help="names the runtime folder")
    args = parser.parse_args(argv)
    return serve(args.app, bind=args.bind, name=args.name, workers=args.workers, pid_file=args.pid)


if __name__ == "__main__":
    sys.exit(main())
