"""`mmguard remote submit|status|wait|download|cancel|report`: the service from scripts, over
mmguard.client. Registered through the `mmguard.commands` entry point.

Server and key: --url / --key, else $MMGUARD_URL / $MMGUARD_API_KEY.
Exit codes: 0 ok; 1 other error (e.g. --timeout passed); 2 usage or bad input (unknown job, dataset
refused, invalid config); 3 the job failed or was cancelled; 4 authentication; 5 server unreachable
or failing (5xx).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_JOB_FAILED, EXIT_AUTH, EXIT_UNREACHABLE = 0, 1, 2, 3, 4, 5


class _Reporter:
    """A one-line progress bar on a terminal (stderr), plain lines when not attached to one."""

    def __init__(self, quiet: bool = False) -> None:
        self.tty = sys.stderr.isatty()
        self.quiet = quiet
        self._last: Any = None
        self._open = False

    def line(self, text: str) -> None:
        if self.quiet:
            return
        self.end()
        print(text, file=sys.stderr, flush=True)

    def bar(self, label: str, done: int, total: int, unit: str = "") -> None:
        if self.quiet:
            return
        if self.tty:
            frac = done / total if total else 0.0
            width = 30
            filled = int(frac * width)
            text = f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}{unit} {frac:4.0%}"
            print(text, end="", file=sys.stderr, flush=True)
            self._open = True
            return
        step = (label, (10 * done // total) if total else 0)  # plain lines: every 10 %
        if step != self._last:
            self._last = step
            print(f"{label}: {done}/{total}{unit}", file=sys.stderr, flush=True)

    def end(self) -> None:
        if self._open:
            print(file=sys.stderr, flush=True)
            self._open = False


def _client(args: argparse.Namespace):  # noqa: ANN202
    from mmguard.client import Client

    url = args.url or os.environ.get("MMGUARD_URL")
    key = args.key or os.environ.get("MMGUARD_API_KEY")
    if not url:
        raise _Usage("no server: pass --url or set MMGUARD_URL")
    if not key:
        raise _Usage("no API key: pass --key or set MMGUARD_API_KEY")
    return Client(url, key, timeout=args.http_timeout)


class _Usage(Exception):
    pass


def _zip_folder(folder: Path) -> Path:
    """A deterministic .zip of a dataset folder (same bytes for the same files: retries with the same
    --idempotency-key match)."""
    handle, name = tempfile.mkstemp(prefix="mmguard-upload-", suffix=".zip")
    os.close(handle)
    with zipfile.ZipFile(name, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                info = zipfile.ZipInfo(path.relative_to(folder).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                with open(path, "rb") as src, archive.open(info, "w") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
    return Path(name)


def _config(value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    text = Path(value[1:]).read_text() if value.startswith("@") else value
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Usage(f"--config is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise _Usage("--config must be a JSON object")
    return config


def _print_job(job, as_json: bool) -> None:  # noqa: ANN001
    if as_json:
        print(json.dumps(job.raw))
    else:
        p = job.progress
        line = f"{job.id}\t{job.status}\t{p.stage} {p.done}/{p.total}"
        print(line + (f"\t{job.error}" if job.error else ""))


def _wait(client, job_id: str, args: argparse.Namespace, out: _Reporter):  # noqa: ANN001, ANN202
    def update(job) -> None:  # noqa: ANN001
        if job.status == "running":
            out.bar(f"job {job.id[:8]} {job.progress.stage}", job.progress.done, job.progress.total)
        else:
            out.line(f"job {job.id}: {job.status}")

    job = client.wait(job_id, timeout=args.timeout, on_update=update, raise_on_failure=False)
    out.end()
    return job


def _download(client, job_id: str, target: Path, out: _Reporter) -> None:  # noqa: ANN001
    client.download(job_id, target, progress=lambda d, t: out.bar("download", d // 1024, t // 1024, " KiB"))
    out.end()
    out.line(f"saved {target}")


# -- commands ------------------------------------------------------------------------------------
def _submit(args: argparse.Namespace) -> int:
    source = Path(args.dataset)
    if not source.exists():
        raise _Usage(f"{source}: no such file or folder")
    if args.out and not args.wait:
        raise _Usage("--out needs --wait")
    config = _config(args.config)
    out = _Reporter(args.quiet)
    archive = _zip_folder(source) if source.is_dir() else source
    key = args.idempotency_key
    try:
        with _client(args) as client:
            dataset = client.upload_dataset(
                archive, idempotency_key=f"{key}:dataset" if key else None,
                progress=lambda d, t: out.bar("upload", d // 1024, t // 1024, " KiB"),
            )
            out.end()
            out.line(f"dataset {dataset.id}: {dataset.sample_count} samples ({dataset.layout}, {dataset.kind})"
                     + (" [replayed]" if dataset.replayed else ""))
            job = client.create_job(dataset.id, preset=args.preset, config=config,
                                    idempotency_key=f"{key}:job" if key else None)
            out.line(f"job {job.id}: {job.status}" + (" [replayed]" if job.replayed else ""))
            if args.wait:
                job = _wait(client, job.id, args, out)
                if job.status == "succeeded" and args.out:
                    _download(client, job.id, Path(args.out), out)
            _print_job(job, args.json)
            if job.status in ("failed", "cancelled"):
                return EXIT_JOB_FAILED
            return EXIT_OK
    finally:
        if archive is not source:
            archive.unlink(missing_ok=True)


def _status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.get_job(args.job)
    _print_job(job, args.json)
    return EXIT_JOB_FAILED if job.status in ("failed", "cancelled") else EXIT_OK


def _wait_cmd(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = _wait(client, args.job, args, _Reporter(args.quiet))
    _print_job(job, args.json)
    return EXIT_JOB_FAILED if job.status in ("failed", "cancelled") else EXIT_OK


def _download_cmd(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.get_job(args.job)
        if job.status in ("failed", "cancelled"):
            print(f"mmguard: job {job.id} {job.status}" + (f": {job.error}" if job.error else ""), file=sys.stderr)
            return EXIT_JOB_FAILED
        _download(client, args.job, Path(args.out), _Reporter(args.quiet))
    return EXIT_OK


def _cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.cancel_job(args.job)
    _print_job(job, args.json)
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    with _client(args) as client:
        print(json.dumps(client.report(args.job), indent=2))
    return EXIT_OK


def _run(func):  # noqa: ANN001, ANN202
    """Map client errors to the documented exit codes, with the API's message on stderr."""

    def run(args: argparse.Namespace) -> int:
        from mmguard import client as c

        try:
            return func(args)
        except _Usage as exc:
            print(f"mmguard: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except c.AuthError as exc:
            print(f"mmguard: authentication failed: {exc.detail}", file=sys.stderr)
            return EXIT_AUTH
        except (c.Unreachable, c.ServerError) as exc:
            print(f"mmguard: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE
        except c.JobFailed as exc:
            print(f"mmguard: {exc}", file=sys.stderr)
            return EXIT_JOB_FAILED
        except (c.NotFound, c.InvalidRequest, c.TooLarge, c.Conflict) as exc:
            print(f"mmguard: {exc.detail}", file=sys.stderr)
            for problem in getattr(exc, "problems", [])[:20]:
                where = ":".join(str(problem[k]) for k in ("file", "line") if problem.get(k) is not None)
                print(f"  {where}: {problem.get('message')}" if where else f"  {problem.get('message')}",
                      file=sys.stderr)
            return EXIT_USAGE
        except TimeoutError as exc:
            print(f"mmguard: {exc}", file=sys.stderr)
            return EXIT_ERROR
        except c.MMGuardError as exc:
            print(f"mmguard: {exc}", file=sys.stderr)
            return EXIT_ERROR
        except OSError as exc:
            print(f"mmguard: {exc}", file=sys.stderr)
            return EXIT_USAGE

    return run


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="server URL, e.g. http://127.0.0.1:8000 (default $MMGUARD_URL)")
    common.add_argument("--key", help="API key (default $MMGUARD_API_KEY)")
    common.add_argument("--json", action="store_true", help="print the job as JSON on stdout")
    common.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    common.add_argument("--http-timeout", type=float, default=60.0, help=argparse.SUPPRESS)
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument("--timeout", type=float, default=None, help="give up waiting after SECONDS (exit 1)")

    remote = subparsers.add_parser(
        "remote", help="use a running mmguard service (submit, status, download, ...)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = remote.add_subparsers(dest="remote_command", metavar="ACTION", required=True)
    submit = sub.add_parser("submit", parents=[common, waiting],
                            help="upload a dataset (.zip, .tar or folder) and start a protection job")
    submit.add_argument("dataset", metavar="DATASET")
    submit.add_argument("--preset", "-p", help="fast | balanced | strong (server default: balanced)")
    submit.add_argument("--config", help="ProtectionConfig fields as JSON, or @file.json")
    submit.add_argument("--wait", action="store_true", help="wait for the job to end")
    submit.add_argument("--out", "-o", help="with --wait: save the protected archive here")
    submit.add_argument("--idempotency-key", metavar="KEY",
                        help="re-running with the same KEY and input returns the same dataset and job")
    submit.set_defaults(func=_run(_submit))
    for name, func, text, parents in (
        ("status", _status, "print a job's status (exit 3 when failed/cancelled)", [common]),
        ("wait", _wait_cmd, "wait for a job to end", [common, waiting]),
        ("cancel", _cancel, "cancel a job", [common]),
        ("report", _report, "print a finished job's report (JSON)", [common]),
    ):
        parser = sub.add_parser(name, parents=parents, help=text)
        parser.add_argument("job", metavar="JOB")
        parser.set_defaults(func=_run(func))
    download = sub.add_parser("download", parents=[common], help="save a finished job's protected archive")
    download.add_argument("job", metavar="JOB")
    download.add_argument("--out", "-o", required=True)
    download.set_defaults(func=_run(_download_cmd))
