"""Service overhead: the same dataset protected through REST + Celery and by the direct library call.

    python benchmarks/service_bench.py                      # embedded service (SQLite, filesystem queue)
    python benchmarks/service_bench.py --deployed \\
        --database-url postgresql+psycopg2://postgres@127.0.0.1/mmguard_bench --broker-url redis://127.0.0.1:6379/0

Prints the direct time, the service time (upload -> job -> poll -> download, and job alone) and the
ratio service / direct (target <= 1.10). Both sides use the same config and one torch thread; the
worker is warmed by one small job first, as a long-running worker would be.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import httpx
from service_process import stop, wait_healthy  # benchmarks/ is the script folder, so on sys.path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# the `fast` preset on the test-size zoo, one thread: seconds per job here, so the fixed service
# costs (queue pick-up, polling, upload, download) are measured against a small denominator
DEFAULT_CONFIG = {"zoo_size": "test", "surrogates": ["zoo:llava"], "threads": 1}


def make_dataset(folder: Path, n: int, image_size: int, seed: int = 3) -> Path:
    from mmguard_core import synth

    synth.write_dataset(folder, synth.generate("color", n, seed=seed, image_size=image_size))
    target = folder.with_suffix(".zip")
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return target


def direct(dataset: Path, out: Path, preset_name: str, config: dict) -> tuple[float, float]:
    """(wall seconds, the engine's own total from its report)."""
    from mmguard_core.config import preset
    from mmguard_core.pipeline import run_protection

    started = time.perf_counter()
    report = run_protection(dataset, out, preset(preset_name, **config))
    return time.perf_counter() - started, float(report["timings"]["total"])


def through_service(base: str, key: str, dataset: Path, out: Path, preset_name: str, config: dict,
                    poll: float) -> tuple[float, float, float]:
    """(upload -> download seconds, job created -> succeeded seconds, the engine's own total)."""
    h = {"Authorization": f"Bearer {key}"}
    with httpx.Client(headers=h, timeout=120) as client:
        started = time.perf_counter()
        with open(dataset, "rb") as handle:
            ds = client.post(f"{base}/datasets", files={"file": (dataset.name, handle)}).raise_for_status().json()
        job_started = time.perf_counter()
        job = client.post(f"{base}/jobs", json={"dataset_id": ds["id"], "preset": preset_name,
                                                "config": config}).raise_for_status().json()
        while job["status"] not in ("succeeded", "failed", "cancelled"):
            time.sleep(poll)
            job = client.get(f"{base}/jobs/{job['id']}").raise_for_status().json()
        job_seconds = time.perf_counter() - job_started
        if job["status"] != "succeeded":
            raise SystemExit(f"job ended {job['status']}: {job['error']}")
        with client.stream("GET", f"{base}/jobs/{job['id']}/archive") as response, open(out, "wb") as sink:
            for chunk in response.iter_bytes():
                sink.write(chunk)
        total = time.perf_counter() - started
        report = client.get(f"{base}/jobs/{job['id']}/report").raise_for_status().json()["report"]
        return total, job_seconds, float(report["timings"]["total"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--config", type=json.loads, default=DEFAULT_CONFIG, help="JSON config overrides")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--poll", type=float, default=0.25, help="seconds between status polls")
    parser.add_argument("--deployed", action="store_true", help="Postgres + Redis + `celery -A worker worker`")
    parser.add_argument("--database-url")
    parser.add_argument("--broker-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--port", type=int, default=8799)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    tmp = Path(tempfile.mkdtemp(prefix="mmguard-bench-"))
    dataset = make_dataset(tmp / "dataset", args.samples, args.image_size)
    warm = make_dataset(tmp / "warm", 2, 32, seed=4)
    print(f"dataset: {args.samples} samples, {args.image_size}px; preset {args.preset} + {json.dumps(args.config)}")

    env = dict(os.environ, MMGUARD_DATA_DIR=str(tmp / "state"), MMGUARD_THREADS=str(args.config.get("threads", 1)),
               PYTHONUNBUFFERED="1")
    procs: list[subprocess.Popen] = []
    log = open(tmp / "service.log", "wb")  # noqa: SIM115
    if args.deployed:
        if not args.database_url:
            raise SystemExit("--deployed needs --database-url")
        env.update(MMGUARD_DATABASE_URL=args.database_url, MMGUARD_BROKER_URL=args.broker_url,
                   MMGUARD_QUEUE=f"mmguard-bench-{os.getpid()}")
        subprocess.run([str(BIN / "mmguard"), "db", "upgrade"], env=env, check=True, stdout=subprocess.DEVNULL)
        procs.append(subprocess.Popen([str(BIN / "celery"), "-A", "worker", "worker", "--concurrency=1",
                                       "-Q", env["MMGUARD_QUEUE"], "--loglevel=WARNING"], env=env, stdout=log, stderr=log))
        serve = [sys.executable, "-m", "app.server", "--port", str(args.port), "--no-worker", "--log-level", "WARNING"]
    else:
        serve = [sys.executable, "-m", "app.server", "--port", str(args.port), "--log-level", "WARNING"]
    procs.append(subprocess.Popen(serve, env=env, stdout=log, stderr=log, cwd=tmp))
    base = f"http://127.0.0.1:{args.port}/api/v1"
    try:
        wait_healthy(base, procs[-1])
        if args.deployed:
            key = subprocess.run([str(BIN / "mmguard"), "admin", "create-key", "--owner", "bench"], env=env,
                                 check=True, capture_output=True, text=True).stdout.strip()
        else:
            key = (tmp / "state" / "local-api-key").read_text().strip()

        through_service(base, key, warm, tmp / "warm-out.zip", args.preset, args.config, args.poll)  # warm worker
        direct(warm, tmp / "warm-direct.zip", args.preset, args.config)  # warm this process (imports, zoo)

        directs, services, jobs, overheads = [], [], [], []
        for r in range(args.repeats):
            wall, engine_direct = direct(dataset, tmp / f"direct-{r}.zip", args.preset, args.config)
            directs.append(wall)
            total, job, engine_worker = through_service(base, key, dataset, tmp / f"service-{r}.zip", args.preset,
                                                        args.config, args.poll)
            services.append(total)
            jobs.append(job)
            # what the service adds, independent of how fast the engine ran this time (shared CPUs)
            overheads.append((total - engine_worker) - (wall - engine_direct))
            print(f"run {r + 1}: direct {wall:.2f}s (engine {engine_direct:.2f}s)  service {total:.2f}s "
                  f"(job {job:.2f}s, engine in the worker {engine_worker:.2f}s)")
    finally:
        for proc in reversed(procs):
            stop(proc)
        log.close()
        if args.deployed:  # drop this run's queue and bindings from Redis
            import redis

            client = redis.Redis.from_url(args.broker_url)
            for key in client.scan_iter(match=f"*{env['MMGUARD_QUEUE']}*"):
                client.delete(key)

    d, s, j = statistics.median(directs), statistics.median(services), statistics.median(jobs)
    mode = "deployed (Postgres + Redis + Celery)" if args.deployed else "embedded (SQLite + filesystem queue)"
    print(f"mode: {mode}  (service log: {tmp / 'service.log'})")
    print(f"direct library call:      {d:8.2f} s")
    print(f"REST + Celery, job only:  {j:8.2f} s")
    print(f"REST + Celery, end to end:{s:8.2f} s  (upload, job, polls every {args.poll}s, download)")
    o = statistics.median(overheads)
    print(f"ratio service / direct:   {s / d:8.3f}  (job only {j / d:.3f}; target <= 1.10)")
    print(f"service overhead outside the engine: {o:.2f} s per job -> ratio {(d + o) / d:.3f} at this job size "
          "(the raw ratio also carries the engine's run-to-run noise on shared CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
