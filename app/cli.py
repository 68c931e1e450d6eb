"""`mmguard serve | worker | admin | db`: the service's subcommands, found by mmguard_core.cli through
the `mmguard.commands` entry point. Heavy imports happen inside the commands, so `mmguard protect`
pays nothing for them."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable


def _one_line_errors(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """An admin or db command's expected failures as one line: a revision alembic does not know (exit
    2, a usage error), a data folder that is a file or read-only, a database it cannot open (exit 1)."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        from alembic.util.exc import CommandError
        from sqlalchemy.exc import DBAPIError

        try:
            return command(args)
        except CommandError as exc:
            print(f"mmguard: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            print(f"mmguard: {where}{exc.strerror or exc}", file=sys.stderr)
            return 1
        except DBAPIError as exc:
            print(f"mmguard: cannot use the database: {exc.orig}", file=sys.stderr)
            return 1

    return run


def _data_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="embedded state (SQLite file, storage, queue, local key); default $MMGUARD_DATA_DIR or ./.mmguard",
    )


def apply_data_dir(args: argparse.Namespace) -> None:
    """--data-dir wins over MMGUARD_DATA_DIR, for this process and the worker it starts."""
    if getattr(args, "data_dir", None):
        os.environ["MMGUARD_DATA_DIR"] = os.path.abspath(args.data_dir)
    from app.core.config import get_settings

    get_settings.cache_clear()


def prepare_database(settings, *, migrate_always: bool) -> None:  # noqa: ANN001
    from app.core import migrate

    if migrate_always or settings.embedded_database:
        settings.ensure_dirs()
        migrate.upgrade(settings.sqlalchemy_url)
        return
    if migrate.current_revision(settings.sqlalchemy_url) != migrate.head_revision():
        raise SystemExit("mmguard: the database schema is not up to date; run `mmguard db upgrade` first")


# -- serve ---------------------------------------------------------------------------------------
def add_serve_arguments(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    _data_dir_option(serve)
    worker_group = serve.add_mutually_exclusive_group()
    worker_group.add_argument("--worker", dest="worker", action="store_true", default=None,
                              help="start a worker child process (default: only with the embedded queue)")
    worker_group.add_argument("--no-worker", dest="worker", action="store_false")
    serve.add_argument("--no-migrate", action="store_true", help="do not upgrade the database schema on start")
    serve.add_argument("--log-level", default="INFO")


def serve_argv(args: argparse.Namespace) -> list[str]:
    argv = ["--host", args.host, "--port", str(args.port), "--log-level", args.log_level]
    if args.data_dir:
        argv += ["--data-dir", os.path.abspath(args.data_dir)]
    if args.worker is not None:
        argv.append("--worker" if args.worker else "--no-worker")
    if args.no_migrate:
        argv.append("--no-migrate")
    return argv


def _exec_clean(module_argv: list[str]) -> int:
    """Replace this process by a fresh interpreter: the `mmguard` entry point has loaded every
    subcommand (some import torch), and the API and the worker parent must stay torch-free."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *module_argv])
    return 0  # not reached


def _serve(args: argparse.Namespace) -> int:
    return _exec_clean(["-m", "app.server", *serve_argv(args)])


# -- worker ------------------------------------------------------------------------------------
def _worker(args: argparse.Namespace) -> int:
    apply_data_dir(args)
    from app.core.config import get_settings
    from app.embedded import worker_argv

    settings = get_settings()
    prepare_database(settings, migrate_always=False)
    # `celery -A worker worker` in a fresh interpreter: the worker parent must never hold torch
    return _exec_clean(worker_argv(settings, args.log_level, args.concurrency)[1:])


# -- admin -------------------------------------------------------------------------------------
def _create_key(args: argparse.Namespace) -> int:
    apply_data_dir(args)
    from app import crud
    from app.core.config import get_settings
    from app.core.db import session_scope

    name = args.owner.strip()
    if not name or len(name) > 100:
        print("mmguard: --owner must be 1 to 100 characters", file=sys.stderr)
        return 2
    settings = get_settings()
    prepare_database(settings, migrate_always=False)
    with session_scope(settings.sqlalchemy_url) as session:
        key = crud.create_api_key(session, crud.get_or_create_owner(session, name))
    print(key)
    return 0


def _revoke_key(args: argparse.Namespace) -> int:
    apply_data_dir(args)
    from app import crud
    from app.core import security
    from app.core.config import get_settings
    from app.core.db import session_scope

    prefix = security.key_prefix(args.key) or args.key
    settings = get_settings()
    prepare_database(settings, migrate_always=False)
    with session_scope(settings.sqlalchemy_url) as session:
        revoked = crud.revoke_api_key(session, prefix)
    if not revoked:
        print("mmguard: no such active key", file=sys.stderr)
        return 1
    print("revoked", file=sys.stderr)
    return 0


# -- db ----------------------------------------------------------------------------------------
def _db(args: argparse.Namespace) -> int:
    apply_data_dir(args)
    from app.core import migrate
    from app.core.config import get_settings

    settings = get_settings()
    if settings.embedded_database:
        settings.ensure_dirs()
    url = settings.sqlalchemy_url
    if args.db_command == "upgrade":
        migrate.upgrade(url, args.revision)
    elif args.db_command == "downgrade":
        migrate.downgrade(url, args.revision)
    print(f"database revision: {migrate.current_revision(url) or 'none'} (head: {migrate.head_revision()})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    serve = subparsers.add_parser("serve", help="run the web service (embedded default: SQLite, local worker)")
    add_serve_arguments(serve)
    serve.set_defaults(func=_serve)

    worker = subparsers.add_parser("worker", help="run a Celery worker for the configured broker")
    _data_dir_option(worker)
    worker.add_argument("--concurrency", type=int, default=1, help="jobs run at once (default 1)")
    worker.add_argument("--log-level", default="INFO")
    worker.set_defaults(func=_worker)

    admin = subparsers.add_parser("admin", help="manage owners and API keys")
    admin_sub = admin.add_subparsers(dest="admin_command", metavar="ACTION", required=True)
    create = admin_sub.add_parser("create-key", help="create an API key; prints the key alone on stdout")
    create.add_argument("--owner", required=True, help="owner name (created if new)")
    _data_dir_option(create)
    create.set_defaults(func=_one_line_errors(_create_key))
    revoke = admin_sub.add_parser("revoke-key", help="revoke an API key (the key or its prefix)")
    revoke.add_argument("key")
    _data_dir_option(revoke)
    revoke.set_defaults(func=_one_line_errors(_revoke_key))

    db = subparsers.add_parser("db", help="database schema migrations")
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    for name, default, text in (
        ("upgrade", "head", "upgrade the schema (default: to head)"),
        ("downgrade", "-1", "downgrade the schema (default: one step; 'base' removes all)"),
        ("current", None, "print the current revision"),
    ):
        sub = db_sub.add_parser(name, help=text)
        if default is not None:
            sub.add_argument("revision", nargs="?", default=default)
        _data_dir_option(sub)
        sub.set_defaults(func=_one_line_errors(_db))
