"""gunicorn settings for a Larder region (`larder serve --region R` passes this file).

Sync workers: each request is one memcached round trip with no other I/O to overlap, so
processes (not threads) use both cores best. Values can be overridden by GUNICORN_* env vars.
"""

import multiprocessing
import os

workers = int(os.environ.get("LARDER_WORKERS", multiprocessing.cpu_count() * 2))
worker_class = "sync"
keepalive = 5
timeout = 30
graceful_timeout = 10
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LARDER_LOG_LEVEL", "info")
proc_name = f"larder-{os.environ.get('LARDER_REGION', 'api')}"
