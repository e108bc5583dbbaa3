"""The `larder` command: validate configuration, run syncs, rehydrate caches, manage API keys, serve."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import orjson

from orchestration.config.load import ConfigError, Project, load_project


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ConfigError as error:
        print(f"larder: configuration error:\n{error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="larder", description=__doc__)
    parser.add_argument("--config", type=Path, help="larder.yaml (default: $LARDER_CONFIG or orchestration/larder.yaml)")
    parser.set_defaults(run=lambda args: parser.print_help() or 1)
    commands = parser.add_subparsers(title="commands")

    validate = commands.add_parser("validate", help="load and check the configuration; list syncs")
    validate.add_argument("--offline", action="store_true",
                          help="do not check mapped columns against the warehouse's models")
    validate.set_defaults(run=_validate)

    sync = commands.add_parser("sync", help="run syncs now")
    sync.add_argument("names", nargs="*", help="sync names (default: every sync)")
    sync.add_argument("--full-resync", action="store_true", help="rewrite every record, not only changes")
    sync.add_argument("--region", action="append", dest="regions", help="write only this region (repeatable)")
    sync.set_defaults(run=_sync)

    rehydrate = commands.add_parser("rehydrate", help="rebuild a region's Memcached from durable state")
    rehydrate.add_argument("--region", required=True)
    rehydrate.set_defaults(run=_rehydrate)

    keys = commands.add_parser("keys", help="create, list and revoke API keys")
    key_commands = keys.add_subparsers(title="key commands", required=True)
    create = key_commands.add_parser("create", help="create a key and print its secret once")
    create.add_argument("--name", required=True)
    create.add_argument("--collections", help="comma-separated collections it may read (default: all)")
    create.add_argument("--regions", help="comma-separated regions it may call (default: all)")
    create.add_argument("--rate-limit", type=float, help="requests per second (default: unlimited)")
    create.add_argument("--quiet", action="store_true", help="print only the secret")
    create.set_defaults(run=_keys_create)
    listing = key_commands.add_parser("list", help="list keys (never their secrets)")
    listing.set_defaults(run=_keys_list)
    revoke = key_commands.add_parser("revoke", help="revoke a key by name")
    revoke.add_argument("name")
    revoke.set_defaults(run=_keys_revoke)

    up = commands.add_parser("up", help="start the whole demo: memcached, dbt + syncs, APIs, Dagster UI")
    up.add_argument("--detach", action="store_true", help="return once everything is ready")
    up.set_defaults(run=lambda args: _devstack().up(detach=args.detach, config=args.config))
    down = commands.add_parser("down", help="stop every process `larder up` started")
    down.set_defaults(run=lambda args: _devstack().down())

    serve = commands.add_parser("serve", help="serve a region's API: nginx in front of gunicorn")
    serve.add_argument("--region", required=True)
    serve.add_argument("--bind", help="host:port (default: the region's host and port)")
    serve.add_argument("--workers", type=int, help="gunicorn workers (default: cores + 1)")
    serve.add_argument("--pid", help="pid file (of this process, which stops both servers on TERM)")
    serve.set_defaults(run=_serve)

    render = commands.add_parser("render", help="preview a Braze message: render it, calling this API for connected_content")
    render.add_argument("template", type=Path, help="a Liquid message template (.liquid)")
    render.add_argument("--region", help="the region whose API answers (default: the first enabled region)")
    render.add_argument("--api", help="base URL of the API instead, e.g. http://127.0.0.1:8080")
    render.add_argument("--key", default=os.environ.get("LARDER_API_KEY"),
                        help="API key sent as the Authorization header (default: $LARDER_API_KEY)")
    render.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                        help="a template variable, e.g. user_id=12345 for {{${user_id}}} (repeatable)")
    render.set_defaults(run=_render)
    return parser


def _project(args) -> Project:
    if args.config is not None:
        os.environ["LARDER_CONFIG"] = str(args.config.resolve())
    return load_project(args.config)


def _validate(args) -> int:
    project = _project(args)
    print(f"{project.path}: ok")
    for declared in project.syncs:
        spec = declared.spec
        print(
            f"  sync {spec.name}: {spec.model.name} → {spec.collection} "
            f"(indices: {', '.join(spec.index_names)}; delete: {spec.delete.value}; from {declared.source.location})"
        )
    if not args.offline:
        _check_models(project)
    return 0


def _check_models(project: Project) -> None:
    """Check every mapped column exists in its model (raises ConfigError naming file and field).

    A model the warehouse cannot answer yet (e.g. dbt has not built it) is reported, not fatal.
    """
    from orchestration.sync.warehouse import Warehouse, WarehouseError

    warehouse = Warehouse(project.spec.warehouse.url)
    try:
        for spec in (declared.spec for declared in project.syncs):
            try:
                columns = warehouse.columns(project.model_sql(spec))
            except WarehouseError as error:
                print(f"  sync {spec.name}: columns not checked, the model cannot be read: {error}", file=sys.stderr)
                continue
            project.check_columns(spec, columns)
            print(f"  sync {spec.name}: every mapped column is in the model")
    finally:
        warehouse.dispose()


def _sync(args) -> int:
    from orchestration.sync import Services, SyncFailed, run_sync

    project = _project(args)
    names = args.names or list(project.sync_names)
    services = Services(project)
    failed = 0
    try:
        for name in names:
            started = time.monotonic()

            def progress(phase: str, counts: dict[str, int]) -> None:
                print(f"  {name} {phase}: {_counts_text(counts)}", file=sys.stderr, flush=True)

            try:
                report = run_sync(services, name, full_resync=args.full_resync, regions=args.regions,
                                  origin="cli", progress=progress)
            except SyncFailed as error:
                print(f"sync {name}: FAILED: {error}", file=sys.stderr)
                failed += 1
                continue
            print(f"sync {name}: {report.status} in {time.monotonic() - started:.1f}s: {_counts_text(report.counts)}")
    finally:
        services.close()
    return 1 if failed else 0


def _rehydrate(args) -> int:
    from orchestration.sync import Services, rehydrate_region

    project = _project(args)
    if args.region not in project.regions:
        print(f"larder: unknown region {args.region!r} (configured: {', '.join(project.regions)})", file=sys.stderr)
        return 2
    services = Services(project)
    try:
        totals = rehydrate_region(services, args.region)
    finally:
        services.close()
    print(f"rehydrated region {args.region}: {totals['records']} records under {totals['keys']} keys")
    return 0


def _state(args):
    from orchestration.store.state import StateStore

    store = StateStore(_project(args).spec.state.url)
    store.create_all()
    return store


def _keys_create(args) -> int:
    store = _state(args)
    try:
        key, secret = store.create_key(
            args.name,
            collections=_split(args.collections),
            regions=_split(args.regions),
            rate_limit=args.rate_limit,
        )
    except ValueError as error:
        print(f"larder: {error}", file=sys.stderr)
        return 2
    if args.quiet:
        print(secret)
    else:
        print(f"created API key {key.name!r}. Its secret is shown once; store it now:\n{secret}")
    return 0


def _keys_list(args) -> int:
    for key in _state(args).list_keys():
        status = "revoked" if key.revoked_at else "active"
        print(orjson.dumps({
            "name": key.name, "prefix": key.prefix, "status": status,
            "collections": key.collections, "regions": key.regions, "rate_limit": key.rate_limit,
            "created_at": key.created_at,
        }).decode())
    return 0


def _keys_revoke(args) -> int:
    from orchestration.store.state import UnknownApiKey

    try:
        key = _state(args).revoke_key(args.name)
    except UnknownApiKey as error:
        print(f"larder: {error}", file=sys.stderr)
        return 2
    print(f"revoked API key {key.name!r}")
    return 0


def _serve(args) -> int:
    from orchestration.cache_watch import CacheLossWatcher
    from serving.launcher import serve

    project = _project(args)
    if args.region not in project.regions:
        print(f"larder: unknown region {args.region!r} (configured: {', '.join(project.regions)})", file=sys.stderr)
        return 2
    region = project.regions[args.region]
    env = {"LARDER_REGION": args.region, "LARDER_CONFIG": str(project.path.resolve())}
    os.environ.update(env)
    watcher = CacheLossWatcher(project.path.resolve(), args.region, region.servers)
    return serve("serving.app:get_app()", bind=args.bind or f"{region.host}:{region.port}", name=args.region,
                 workers=args.workers, pid_file=args.pid, env=env, companions=[watcher])


def _devstack():
    from orchestration import devstack

    return devstack


def _render(args) -> int:
    from liquid.exceptions import LiquidError

    from serving.braze import ApiTarget, render_template

    variables = dict(item.partition("=")[::2] for item in args.var)
    base = args.api
    if base is None:
        project = _project(args)
        region = args.region or project.enabled_regions[0]
        if region not in project.regions:
            print(f"larder: unknown region {region!r} (configured: {', '.join(project.regions)})", file=sys.stderr)
            return 2
        base = f"http://{project.regions[region].host}:{project.regions[region].port}"
    try:
        source = args.template.read_text()
    except OSError as error:
        print(f"larder: cannot read {args.template}: {error.strerror}", file=sys.stderr)
        return 2
    try:
        print(render_template(source, ApiTarget(base, args.key), variables), end="")
    except LiquidError as error:  # a syntax error, or a connected_content call that failed
        print(f"larder: {args.template}: {error}", file=sys.stderr)
        return 1
    return 0


def _split(value: str | None) -> list[str] | None:
    return [part.strip() for part in value.split(",") if part.strip()] if value else None


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {value}" for name, value in counts.items())


if __name__ == "__main__":
    sys.exit(main())
