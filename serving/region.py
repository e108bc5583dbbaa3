"""A region's API as `larder serve --region R` runs it: nginx in front of gunicorn (serving/launcher.py)
and, beside them, the watcher that rehydrates the region when its Memcached lost its data.

`larder serve` checks the project and the region, then replaces itself with this module, so the
`larder` command never imports the server package and `--pid` names the process that supervises both.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from orchestration.config.load import load_project
from serving.cache_watch import CacheLossWatcher
from serving.launcher import serve

APP = "serving.app:get_app()"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.region", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="larder.yaml")
    parser.add_argument("--region", required=True)
    parser.add_argument("--bind", help="host:port (default: the region's host and port)")
    parser.add_argument("--workers", type=int, help="gunicorn sync workers (default: $LARDER_WORKERS, else cores + 1)")
    parser.add_argument("--pid", help="pid file (of this process, which stops both servers on TERM)")
    args = parser.parse_args(argv)

    project = load_project(args.config)
    region = project.regions[args.region]
    env = {"LARDER_REGION": args.region, "LARDER_CONFIG": str(project.path.resolve())}
    os.environ.update(env)
    watcher = CacheLossWatcher(project.path.resolve(), args.region, region.servers)
    return serve(APP, bind=args.bind or f"{region.host}:{region.port}", name=args.region, workers=args.workers,
                 pid_file=args.pid, env=env, companions=[watcher])


if __name__ == "__main__":
    sys.exit(main())
