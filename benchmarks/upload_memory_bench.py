"""Upload memory: the API process's resident memory while a 1 GB body streams to POST /datasets.

    .venv/bin/python benchmarks/upload_memory_bench.py                  # 1 GiB valid dataset zip
    .venv/bin/python benchmarks/upload_memory_bench.py --size-mb 256 --body garbage

Starts the embedded service (`python -m app.server --no-worker`: SQLite, local storage, no worker)
in a private folder, warms it with one small upload (so imports and first-request costs are in the
baseline), then streams one large multipart body from a generator (httpx, Content-Length set, 1 MiB
chunks) while sampling the server's RSS with psutil every 20 ms. Bodies:
  valid    a real dataset zip: a 4-image data.jsonl dataset plus one incompressible stored entry
           padding it to --size-mb (accepted: 201; validation extracts it all, in chunks)
  garbage  "PK\\x03\\x04" then --size-mb of random bytes (stored, then refused by validation: 422)
Prints the baseline, the peak during the upload (and validation) and the growth; exits 1 when the
growth is over --max-growth-mb (default 64 MiB: flat means independent of the body size).
The server only ever listens on 127.0.0.1; the run stops by itself (--timeout).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
from service_process import stop, wait_healthy  # benchmarks/ is the script folder, so on sys.path

REPO = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024
CHUNK = MiB


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def small_dataset_entries() -> list[tuple[str, bytes]]:
    import io

    import numpy as np
    from PIL import Image

    entries, rows = [], []
    for i in range(4):
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, "PNG")
        entries.append((f"images/{i}.png", buffer.getvalue()))
        rows.append(json.dumps({"image": f"images/{i}.png", "question": "What colour?", "answer": "red"}))
    entries.append(("data.jsonl", ("\n".join(rows) + "\n").encode()))
    return entries


def write_valid_zip(path: Path, size: int) -> Path:
    """A dataset zip padded to about `size` bytes with one stored, incompressible entry."""
    block = os.urandom(CHUNK)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        for name, data in small_dataset_entries():
            zf.writestr(name, data)
        info = zipfile.ZipInfo("padding/blob.bin")
        info.compress_type = zipfile.ZIP_STORED
        with zf.open(info, "w", force_zip64=True) as out:
            remaining = max(size - 16 * 1024, 0)  # the dataset entries and zip headers are a few KiB
            while remaining > 0:
                piece = block[: min(CHUNK, remaining)]
                out.write(piece)
                remaining -= len(piece)
    return path


def file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


def garbage_chunks(size: int) -> Iterator[bytes]:
    block = os.urandom(CHUNK)
    yield b"PK\x03\x04"
    sent = 4
    while sent < size:
        piece = block[: min(CHUNK, size - sent)]
        sent += len(piece)
        yield piece


def multipart(parts: Iterator[bytes], size: int, filename: str, boundary: str) -> tuple[Iterator[bytes], int]:
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body() -> Iterator[bytes]:
        yield head
        yield from parts
        yield tail

    return body(), len(head) + size + len(tail)


class Sampler(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.02):
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self.stop = threading.Event()

    def rss(self) -> int:
        return self.process.memory_info().rss

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, self.rss())
                self.samples += 1
            except psutil.Error:
                return
            time.sleep(self.interval)


def upload(client: httpx.Client, base: str, body: Iterator[bytes], length: int, boundary: str) -> httpx.Response:
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": str(length)}
    return client.post(f"{base}/datasets", content=body, headers=headers)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="body size in MiB (default 1024)")
    parser.add_argument("--body", choices=["valid", "garbage"], default="valid")
    parser.add_argument("--max-growth-mb", type=float, default=64.0)
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = parser.parse_args()
    size = args.size_mb * MiB

    tmp = Path(tempfile.mkdtemp(prefix="mmguard-upload-bench-"))
    port = free_port()
    env = dict(os.environ, MMGUARD_DATA_DIR=str(tmp / "state"), MMGUARD_MAX_UPLOAD_BYTES=str(size + 64 * MiB),
               PYTHONUNBUFFERED="1")
    log = open(tmp / "service.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "app.server", "--host", "127.0.0.1", "--port", str(port),
                             "--no-worker", "--log-level", "WARNING"], env=env, stdout=log, stderr=log, cwd=REPO)
    base = f"http://127.0.0.1:{port}/api/v1"
    boundary = "mmguard-bench-boundary-7d1f0c"
    try:
        wait_healthy(base, proc)
        key = (tmp / "state" / "local-api-key").read_text().strip()
        with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=args.timeout) as client:
            warm = tmp / "warm.zip"
            write_valid_zip(warm, 64 * 1024)
            body, length = multipart(file_chunks(warm), warm.stat().st_size, "warm.zip", boundary)
            response = upload(client, base, body, length, boundary)
            if response.status_code != 201:
                raise SystemExit(f"warm-up upload: {response.status_code} {response.text[:300]}")

            if args.body == "valid":
                source = write_valid_zip(tmp / "big.zip", size)
                parts, body_bytes, expected = file_chunks(source), source.stat().st_size, 201
            else:
                parts, body_bytes, expected = garbage_chunks(size), size, 422
            body, length = multipart(parts, body_bytes, "big.zip", boundary)

            sampler = Sampler(proc.pid)
            time.sleep(0.5)
            baseline = sampler.rss()
            sampler.start()
            started = time.perf_counter()
            response = upload(client, base, body, length, boundary)
            seconds = time.perf_counter() - started
            sampler.stop.set()
            sampler.join()
    finally:
        stop(proc)
        log.close()

    growth = (sampler.peak - baseline) / MiB
    print(f"body: {args.body}, {length / MiB:.0f} MiB multipart, streamed in {seconds:.1f} s "
          f"({length / MiB / seconds:.0f} MiB/s, upload + validation)")
    print(f"status: {response.status_code} (expected {expected}): {response.text[:160]}")
    print(f"API process RSS: baseline {baseline / MiB:.1f} MiB, peak {sampler.peak / MiB:.1f} MiB, "
          f"growth {growth:+.1f} MiB ({sampler.samples} samples; limit {args.max_growth_mb:g} MiB)")
    if not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"kept: {tmp}")
    ok = response.status_code == expected and growth <= args.max_growth_mb
    print("flat" if ok else "NOT flat / unexpected status")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
