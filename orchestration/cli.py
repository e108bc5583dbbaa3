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
        _warn(error.warnings)
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

    _add_stack_commands(commands)

    serve = commands.add_parser("serve", help="serve a region's API: nginx in front of gunicorn")
    serve.add_argument("--region", required=True)
    serve.add_argument("--bind", help="host:port (default: the region's host and port)")
    serve.add_argument("--workers", type=int, help="gunicorn sync workers (default: $LARDER_WORKERS, else cores + 1)")
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
    render.add_argument("--strict", action="store_true",
                        help="exit 1 on a warning: a variable not given, a connected_content answer that is not 2xx")
    render.set_defaults(run=_render)
    return parser


def _add_stack_commands(commands) -> None:
    """init, up, down and watch: a project on one machine (orchestration/init.py, orchestration/devstack.py)."""
    init = commands.add_parser("init", help="write a Larder project for an existing dbt project, then dbt parse")
    init.add_argument("--dbt-project", type=Path, required=True, metavar="PATH",
                      help="the dbt project (the folder holding dbt_project.yml)")
    init.add_argument("--dir", type=Path, default=Path("larder"),
                      help="where to write the Larder project (default: ./larder)")
    init.add_argument("--profiles-dir", type=Path, metavar="DIR",
                      help="where profiles.yml is (default: as dbt looks: $DBT_PROFILES_DIR, the project, ~/.dbt)")
    init.add_argument("--target", help="the dbt target whose warehouse Larder reads (default: the profile's)")
    init.add_argument("--force", action="store_true", help="overwrite files that already exist")
    init.set_defaults(run=_init)

    up = commands.add_parser("up", help="start a project (the demo by default): memcached, dbt + syncs, APIs, Dagster UI")
    _config_option(up)
    up.add_argument("--dagster-port", type=int, metavar="PORT", default=int(os.environ.get("LARDER_DAGSTER_PORT", "3000")),
                    help="port of the Dagster UI (default: $LARDER_DAGSTER_PORT or 3000)")
    up.add_argument("--detach", action="store_true", help="return once everything is ready")
    up.set_defaults(run=lambda args: _devstack().up(config=args.config, dagster_port=args.dagster_port,
                                                    detach=args.detach))

    down = commands.add_parser("down", help="stop every process `larder up` started for the project, from any terminal")
    _config_option(down)
    down.set_defaults(run=lambda args: _devstack().down(config=args.config))

    watch = commands.add_parser("watch", help="reload Dagster's code location when the configuration changes "
                                              "(`larder up` runs it)")
    _config_option(watch)
    watch.add_argument("--dagster-url", required=True, metavar="URL", help="the Dagster webserver, e.g. http://127.0.0.1:3000")
    watch.set_defaults(run=lambda args: _devstack().watch(config=args.config, dagster_url=args.dagster_url))


def _config_option(command: argparse.ArgumentParser) -> None:
    # SUPPRESS: `larder --config X up` keeps working (a sub-command default would overwrite it).
    command.add_argument("--config", type=Path, default=argparse.SUPPRESS,
                         help="larder.yaml (default: $LARDER_CONFIG or orchestration/larder.yaml)")


def _init(args) -> int:
    from orchestration.init import InitError, init_project

    try:
        return init_project(args.dbt_project, args.dir, profiles_dir=args.profiles_dir, target=args.target,
                            force=args.force)
    except InitError as error:
        print(f"larder: {error}", file=sys.stderr)
        return 2


def _project(args, *, check_indices: bool = True) -> Project:
    """The project of `--config` (or the default); warnings about its dbt manifest go to stderr."""
    project = _load(args, check_indices=check_indices)
    _warn(project.warnings)
    return project


def _warn(warnings) -> None:
    for warning in warnings:
        print(f"larder: warning: {warning}", file=sys.stderr)


def _load(args, *, check_indices: bool = True) -> Project:
    return load_project(args.config, check_indices=check_indices)


def _validate(args) -> int:
    checks: list[str] = []
    unreadable = 0
    if args.offline:
        project = _project(args)
    else:
        # Columns first: a misspelt column is the usual reason an index is "not a mapped field".
        checks, unreadable = _check_models(_project(args, check_indices=False))
        project = _load(args)
    print(f"{project.path}: ok")
    for declared in project.syncs:
        spec = declared.spec
        print(
            f"  sync {spec.name}: {spec.model.dbt or 'inline SQL'} → {spec.collection} "
            f"(indices: {', '.join(spec.index_names)}; delete: {spec.delete.value}; from {declared.source.location})"
        )
    for line in checks:
        print(line)
    return 1 if unreadable else 0


def _check_models(project: Project) -> tuple[list[str], int]:
    """Check every mapped column exists in its model (raises ConfigError naming file and field).

    Returns a line per sync checked and how many models could not be read, each reported on
    stderr with the sync and the model (e.g. dbt has not built it yet).
    """
    from orchestration.sync.warehouse import Warehouse, WarehouseError

    warehouse = Warehouse(project.spec.warehouse.url)
    checked, unreadable = [], 0
    try:
        for spec in (declared.spec for declared in project.syncs):
            try:
                columns = warehouse.columns(project.model_sql(spec))
            except WarehouseError as error:
                print(f"larder: sync {spec.name}: {spec.model_label} cannot be read: {error}\n"
                      "  (build it first, e.g. dbt build; `larder validate --offline` skips this check)",
                      file=sys.stderr)
                unreadable += 1
                continue
            project.check_columns(spec, columns)
            checked.append(f"  sync {spec.name}: every mapped column is in the model")
    finally:
        warehouse.dispose()
    return checked, unreadable


def _sync(args) -> int:
    from orchestration.sync import Services, SyncFailed, run_sync

    shown_rejections = 5  # the run keeps more (rejections.samples): `/v1/syncs/{sync}/runs` has them

    def print_rejections(samples: list[dict], file) -> None:
        for sample in samples[:shown_rejections]:
            print(f"  rejected: {sample['reason']} (pk {sample['pk']!r})", file=file)
        if len(samples) > shown_rejections:
            print(f"  … {len(samples) - shown_rejections} more rejection samples kept with the run", file=file)

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
                if error.report is not None:
                    print_rejections(error.report.rejection_samples, sys.stderr)
                failed += 1
                continue
            print(f"sync {name}: {report.status} in {time.monotonic() - started:.1f}s: {_counts_text(report.counts)}")
            print_rejections(report.rejection_samples, sys.stdout)
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


def _state(args, project: Project | None = None):
    from orchestration.store.state import StateStore

    store = StateStore((project or _project(args)).spec.state.url)
    store.create_all()
    return store


def _keys_create(args) -> int:
    project = _project(args)
    collections, regions = _split(args.collections), _split(args.regions)
    unknown = [
        f"unknown {kind} {name!r} (configured: {', '.join(known) or 'none'})"
        for kind, names, known in [("collection", collections, project.collection_names),
                                   ("region", regions, tuple(project.regions))]
        for name in names or ()
        if name not in known
    ]
    if unknown:
        print(f"larder: {'; '.join(unknown)}", file=sys.stderr)
        return 2
    store = _state(args, project)
    try:
        key, secret = store.create_key(args.name, collections=collections, regions=regions, rate_limit=args.rate_limit)
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
    project = _project(args)
    if args.region not in project.regions:
        print(f"larder: unknown region {args.region!r} (configured: {', '.join(project.regions)})", file=sys.stderr)
        return 2
    # The server package runs in this same process (its pid is the one `--pid` names), not imported here.
    command = [sys.executable, "-m", "serving.region", "--config", str(project.path.resolve()),
               "--region", args.region]
    for option, value in (("--bind", args.bind), ("--workers", args.workers), ("--pid", args.pid)):
        if value:
            command += [option, str(value)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)
    return 0  # not reached


def _devstack():
    from orchestration import devstack

    return devstack


def _render(args) -> int:
    from liquid.exceptions import LiquidError

    from orchestration.preview.braze import ApiTarget, render_template

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
        preview = render_template(source, ApiTarget(base, args.key), variables)
    except LiquidError as error:  # a syntax error, or a connected_content call that failed
        print(f"larder: {args.template}: {error}", file=sys.stderr)
        return 1
    print(preview.text, end="")
    for warning in preview.warnings:
        print(f"larder: {args.template}: warning: {warning}", file=sys.stderr)
    return 1 if args.strict and preview.warnings else 0


def _split(value: str | None) -> list[str] | None:
    return [part.strip() for part in value.split(",") if part.strip()] if value else None


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {value}" for name, value in counts.items())


if __name__ == "__main__":
    sys.exit(main())
