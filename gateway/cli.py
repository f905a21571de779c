"""Command line: parse arguments, build settings, call the right entry point, return an exit
code. Exit 2 for bad usage or configuration, 1 for a start-up failure, 0 after a clean stop."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

from gateway import __version__, admin_cli
from gateway.config import admin_token_error, load_settings
from gateway.errors import ConfigError, StoreError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


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

    admin_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args.config, args.check)
    if args.command == "demo":
        return _demo(args.port, args.admin_port)
    if args.command == "admin":
        return admin_cli.run(args)
    parser.print_help(sys.stderr)
    return EXIT_CONFIG


def _fail(message: str, code: int) -> int:
    print(f"gateway: {message}", file=sys.stderr)
    return code


def _serve(path: str, check_only: bool) -> int:
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        return _fail(f"config error: {exc}", EXIT_CONFIG)
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
