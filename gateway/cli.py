"""Command line: parse arguments, build settings, call the right entry point, return an exit
code. Exit 2 for bad usage or configuration; 1 for a failure (a start-up that failed, a store
that cannot be reached, migrations pending under `migrate --check`, a problem found by `store
check` or `store backup`); 141 when stdout's reader went away early; 0 otherwise."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gateway import __version__, admin_cli
from gateway.config import admin_token_error, load_settings
from gateway.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from gateway.store.maintenance import Report

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_BROKEN_PIPE = 128 + 13  # SIGPIPE, as shells report it


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="API-key authenticating gateway.")
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the data plane and the admin API")
    serve.add_argument("--config", "-c", required=True, metavar="FILE", help="TOML configuration")
    serve.add_argument("--check", action="store_true", help="validate the configuration and exit")

    demo = sub.add_parser("demo", help="throwaway store, echo upstream, one key: try it with curl")
    demo.add_argument("--port", type=int, default=8080, help="data-plane port (default 8080)")
    demo.add_argument("--admin-port", type=int, default=0, help="admin port (default: any free)")

    store = sub.add_parser("store", help="operate on the key store")
    store_sub = store.add_subparsers(dest="store_command", metavar="COMMAND", required=True)
    copy = store_sub.add_parser(
        "copy",
        help="copy the configured store into another, empty one (e.g. SQLite -> PostgreSQL)",
        description="Copy accounts, keys (hashes, revoked state, last use, webhook settings "
        "and signing secrets, still sealed with the source's key: give the target's gateways "
        "that key), callback origins and the audit trail into an empty store, then verify the "
        "counts. Not copied: the webhook outbox (pending deliveries are not sent from the "
        "target), console and portal sessions and portal links (people sign in again), the "
        "change log and the registered instances. The password of a postgresql:// target may "
        "be in the URL or in PGPASSWORD.",
    )
    copy.add_argument("--config", "-c", required=True, metavar="FILE", help="TOML configuration")
    copy.add_argument("--to", required=True, metavar="URL", help="the target store's URL")
    backup = store_sub.add_parser(
        "backup",
        help="copy a live SQLite store into a new file (consistent while gateways write)",
        description="SQLite's online backup API: the copy is the store at one moment, checked "
        "after it is written. For PostgreSQL, use pg_dump (this command says how).",
    )
    backup.add_argument("--config", "-c", required=True, metavar="FILE", help="TOML configuration")
    backup.add_argument("--to", required=True, metavar="PATH", help="a new file for the copy")
    check = store_sub.add_parser(
        "check", help="integrity check, schema version and row counts (exit 1 on a problem)"
    )
    check.add_argument("--config", "-c", required=True, metavar="FILE", help="TOML configuration")

    migrate = sub.add_parser(
        "migrate",
        help="apply the store's pending schema migrations (or --check: report them, exit 1)",
        description="Bring the store's schema up to date, so a new release can be rolled out "
        "onto it; `gateway serve` does the same when it starts unless "
        "store.migrate_on_start = false. Safe while older gateways run on the store.",
    )
    migrate.add_argument("--config", "-c", required=True, metavar="FILE", help="TOML configuration")
    migrate.add_argument(
        "--check", action="store_true", help="only report; exit 1 if migrations are pending"
    )

    admin_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # a reader that has gone shows here, while it can be handled
    except BrokenPipeError:
        # `gateway admin keys list | head -1`: nothing more to say to anyone. Python would
        # flush stdout again at exit and fail the same way: point it at /dev/null (the
        # recipe of Python's signal module documentation), and exit as a shell reports a
        # process killed by SIGPIPE.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _dispatch(parser, args)
    except ConfigError as exc:  # every command that reads --config says it the same way
        return _fail(f"config error: {exc}", EXIT_CONFIG)


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "serve":
        return _serve(args.config, args.check)
    if args.command == "demo":
        return _demo(args.port, args.admin_port)
    if args.command == "admin":
        return admin_cli.run(args)
    if args.command == "store":
        if args.store_command == "backup":
            return _store_backup(args.config, args.to)
        if args.store_command == "check":
            return _store_check(args.config)
        return _store_copy(args.config, args.to)
    if args.command == "migrate":
        return _migrate(args.config, args.check)
    parser.print_help(sys.stderr)
    return EXIT_CONFIG


def _fail(message: str, code: int) -> int:
    print(f"gateway: {message}", file=sys.stderr)
    return code


def _serve(path: str, check_only: bool) -> int:
    settings = load_settings(path)
    problem = admin_token_error(settings, os.environ)
    if problem is not None:
        return _fail(f"config error: {problem}", EXIT_CONFIG)
    if check_only:
        print(f"{path}: OK")
        return EXIT_OK
    from gateway.logs import setup_logging
    from gateway.server import run, serve
    from gateway.supervisor import StartupError, supervise

    setup_logging(settings.log)
    try:
        run(supervise(settings) if settings.server.workers > 1 else serve(settings))
    except OSError as exc:
        return _fail(f"cannot start: {exc.strerror or exc}", EXIT_FAILURE)
    except (StoreError, StartupError) as exc:
        return _fail(f"cannot start: {exc}", EXIT_FAILURE)
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def _store_copy(path: str, to: str) -> int:
    from dataclasses import replace

    from gateway.config import parse_store_url, redact_url
    from gateway.server import run
    from gateway.store.copy import copy_store
    from gateway.store.factory import make_store

    settings = load_settings(path)
    try:
        target_url = parse_store_url(to)
    except ValueError as exc:
        return _fail(f"--to: {exc}", EXIT_CONFIG)
    if target_url == settings.store.url:
        return _fail("--to names the configured store itself", EXIT_CONFIG)
    summary: dict[str, int] = {}

    async def main() -> None:
        source = make_store(settings.store, os.environ)
        target = make_store(replace(settings.store, url=target_url, password_env=None), os.environ)
        await source.open()
        try:
            await target.open()
            try:
                summary.update(await copy_store(source, target))
            finally:
                await target.close()
        finally:
            await source.close()

    try:
        run(main())
    except StoreError as exc:
        return _fail(f"cannot copy: {exc}", EXIT_FAILURE)
    print(
        f"copied {summary['accounts']} accounts, {summary['api_keys']} keys, "
        f"{summary['callback_origins']} callback origins and {summary['audit_log']} audit "
        f"entries from {redact_url(settings.store.url)} to {redact_url(target_url)}; "
        "counts verified"
    )
    return EXIT_OK


def _migrate(path: str, check_only: bool) -> int:
    from gateway.config import redact_url
    from gateway.server import run
    from gateway.store.factory import make_store
    from gateway.store.schema import MIGRATIONS
    from gateway.store.sql import SchemaBehind

    settings = load_settings(path)
    where = f"store {redact_url(settings.store.url)}"
    try:
        store = make_store(settings.store, os.environ)
    except StoreError as exc:
        return _fail(f"config error: {exc}", EXIT_CONFIG)

    async def main() -> None:
        await store.open("require" if check_only else "apply")
        await store.close()

    try:
        run(main())
    except SchemaBehind as exc:
        pending = exc.latest - exc.found
        print(
            f"{where}: schema version {exc.found}, this gateway's is {exc.latest}:"
            f" {pending} migration{'s' * (pending != 1)} pending"
        )
        return EXIT_FAILURE
    except StoreError as exc:
        return _fail(f"cannot migrate: {exc}", EXIT_FAILURE)
    latest = len(MIGRATIONS)
    if store.schema_version > latest:
        print(
            f"{where}: schema version {store.schema_version}, newer than this gateway's"
            f" {latest} and compatible with it"
        )
    elif store.schema_found == store.schema_version:
        print(f"{where}: schema version {store.schema_version}, up to date")
    else:
        print(
            f"{where}: migrated from schema version {store.schema_found} to {store.schema_version}"
        )
    return EXIT_OK


def _store_backup(path: str, to: str) -> int:
    from pathlib import Path

    from gateway.config import redact_url
    from gateway.store.maintenance import backup_sqlite

    settings = load_settings(path)
    if settings.store.is_postgres:
        return _fail(
            "store backup copies SQLite files; back up PostgreSQL with its own tools, e.g."
            f" pg_dump --format=custom --file {to} '{redact_url(settings.store.url)}'"
            " (restore with pg_restore into an empty database)",
            EXIT_CONFIG,
        )
    try:
        report = backup_sqlite(settings.store.sqlite_path, Path(to))
    except StoreError as exc:
        return _fail(f"cannot back up: {exc}", EXIT_FAILURE)
    key = settings.webhooks.secret_key_env
    sealed = f"${key}" if key else f"{settings.store.sqlite_path}-secret.key"
    print(f"backed up {redact_url(settings.store.url)} to {to}: " + _summary(report))
    for problem in report.problems:
        print(f"problem: {problem}")
    print(f"signing secrets in it open only with the key in {sealed}: keep that key safe too")
    return EXIT_OK if report.intact else EXIT_FAILURE


def _store_check(path: str) -> int:
    from gateway.config import redact_url
    from gateway.server import run
    from gateway.store.factory import make_store
    from gateway.store.maintenance import check_postgres, check_sqlite
    from gateway.store.postgres import PostgresStore

    settings = load_settings(path)

    async def main() -> Report:
        store = make_store(settings.store, os.environ)
        assert isinstance(store, PostgresStore)
        await store.open("skip")
        try:
            return await check_postgres(store)
        finally:
            await store.close()

    try:
        if settings.store.is_postgres:
            report = run(main())
        else:
            report = check_sqlite(settings.store.sqlite_path)
    except StoreError as exc:
        return _fail(f"cannot check: {exc}", EXIT_FAILURE)
    print(f"store {redact_url(settings.store.url)}: " + _summary(report))
    for problem in report.problems:
        print(f"problem: {problem}")
    if report.schema_note is not None:
        print(f"problem: {report.schema_note}")
    return EXIT_OK if report.intact and report.schema_note is None else EXIT_FAILURE


def _summary(report: Report) -> str:
    counts = ", ".join(f"{n} {name}" for name, n in report.counts.items())
    verdict = "intact" if report.intact else f"{len(report.problems)} problem(s)"
    return f"schema version {report.schema_version}; {counts or 'not counted'}; {verdict}"


def _demo(port: int, admin_port: int) -> int:
    from gateway.demo import run_demo
    from gateway.server import run

    code = EXIT_OK

    async def main() -> None:
        nonlocal code
        code = await run_demo(port, admin_port)

    with contextlib.suppress(KeyboardInterrupt):
        run(main())
    return code
