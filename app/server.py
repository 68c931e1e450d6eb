"""`mmguard serve` runs here, in a fresh interpreter (`python -m app.server`), so the API process
never holds torch, whatever the `mmguard` entry point loaded for its other subcommands."""

from __future__ import annotations

import argparse
import signal
import sys

from app.cli import add_serve_arguments, apply_data_dir, prepare_database


def serve(args: argparse.Namespace) -> int:
    apply_data_dir(args)
    import uvicorn

    from app.core.config import get_settings
    from app.embedded import first_start_key, start_worker_child, stop_worker_child
    from app.main import create_app
    from app.recovery import requeue_orphans

    # uvicorn re-raises SIGTERM after its graceful shutdown; turn it into SystemExit so the
    # `finally` below still stops the worker child
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    settings = get_settings()
    settings.ensure_dirs()
    prepare_database(settings, migrate_always=not args.no_migrate)
    key = first_start_key(settings)
    with_worker = settings.embedded_broker if args.worker is None else args.worker
    child = start_worker_child(settings, args.log_level) if with_worker else None
    try:
        requeue_orphans(settings)
        host = f"[{args.host}]" if ":" in args.host else args.host
        base = f"http://{host}:{args.port}"
        print(f"mmguard is serving at {base}{settings.api_prefix}  (docs: {base}{settings.api_prefix}/docs)", flush=True)
        if settings.embedded_database:
            print(f"state: {settings.data_dir.resolve()}", flush=True)
        if key:
            print(f"API key for owner 'local' (also saved to {settings.local_key_file}):", flush=True)
            print(key, flush=True)
        elif settings.embedded_database and settings.local_key_file.is_file():
            print(f"API key for owner 'local': see {settings.local_key_file}", flush=True)
        if child is None and settings.embedded_broker:
            print("note: no worker started (--no-worker); run `mmguard worker` to process jobs", flush=True)
        uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level.lower())
    finally:
        if child is not None:
            stop_worker_child(child)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mmguard serve", description="run the mmguard web service")
    add_serve_arguments(parser)
    return serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
