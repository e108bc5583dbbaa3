"""gunicorn settings for a Larder region (`larder serve --region R` passes this file).

`larder serve` runs gunicorn on a unix socket behind nginx (serving/launcher.py): a sync worker
only ever sees a complete request from the local proxy, never a slow client. The proxy enforces
the request limits (serving/nginx.conf.template), so gunicorn's own are lifted: its HTML error
pages would otherwise answer what nginx let through.

Sync workers, cores + 1 of them: each request is one memcached round trip with no other I/O to
overlap, so processes (not threads) use the cores best; the one extra worker runs while another
waits on memcached. Values can be overridden by GUNICORN_* env vars (or LARDER_WORKERS).

Measured on the 2-core benchmark machine (`python -m bench`, wrk random keys, shared machine):
- gthread keeps connections alive (sync closes each one), but its poller and thread hand-off
  cost as much as the TCP set-up it saves, and its p99 is worse. The bare route, req/s at
  8 / 64 connections (p99 ms): sync 4 workers 6,855 / 6,467 (1.9 / 15.9); gthread 2 × 4 threads
  6,560 / 6,951 (6.6 / 27.3); 4 × 2 threads 6,054 / 5,813 (3.7 / 55.3); 2 × 16 threads
  6,608 / 5,197 (3.6 / 43.0). gthread would also need a memcached client per thread.
- Sync workers, 3 against 4 in alternation: 3 spend less CPU per request (Larder 255 against
  270 µs, the bare route 212 against 225 µs) with the same or better req/s; 2 leave a core idle
  during memcached round trips; 6 cost more again (Larder 288 µs).

Metrics: prometheus_client's multiprocess mode needs a folder of its own per gunicorn master
(two regions on one machine must not mix samples), set in the environment before any worker
imports prometheus_client, emptied at start and removed at exit; a worker that exits is marked
dead so its gauges stop counting.
"""

import multiprocessing
import os
import shutil
import sys
import tempfile
from pathlib import Path

_region = os.environ.get("LARDER_REGION", "api")

workers = int(os.environ.get("LARDER_WORKERS", multiprocessing.cpu_count() + 1))
worker_class = "sync"
keepalive = 5
timeout = 30
graceful_timeout = 10
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LARDER_LOG_LEVEL", "info")
proc_name = f"larder-{_region}"
# gunicorn 26's control socket defaults to one path per user: two regions on one machine would
# take it from each other, so it stays off (signals still work: HUP, TTIN/TTOU, TERM).
control_socket_disable = True
# nginx bounds the request line and each header line (64 KB) and the body (1 MB) and answers in
# JSON; gunicorn's defaults (4 KB line, 8 KB header, 100 headers) would answer HTML first.
limit_request_line = 0
limit_request_field_size = 0
limit_request_fields = 32768

# Recorded in the environment, not a module global: gunicorn re-reads this file on HUP.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=f"larder-metrics-{_region}-")
    os.environ["LARDER_OWNS_METRICS_DIR"] = "1"


def on_starting(server):
    metrics_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in metrics_dir.glob("*.db"):
        stale.unlink()
    if server.app.app_uri == "serving.app:get_app()":  # the benchmark's bare app shares this file
        from serving.reload import watch_in_master

        watch_in_master()


def post_worker_init(worker):
    # The client's address from the local proxy's X-Forwarded-For (see serving/proxy.py), and
    # state reads bounded to all workers but one (serving/fallback.py).
    from serving import fallback
    from serving.proxy import ClientAddress

    worker.wsgi = ClientAddress(worker.wsgi)
    fallback.configure(worker.cfg.workers)


def worker_exit(server, worker):
    # In the exiting worker: its samples tallied since the last flush would go with it.
    metrics = sys.modules.get("serving.metrics")
    if metrics is not None:
        metrics.TALLY.flush()


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if os.environ.get("LARDER_OWNS_METRICS_DIR") == "1":
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
