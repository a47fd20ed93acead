"""HTTP/1.1 load generator: N keep-alive clients POSTing one body, bounded in time and count.

Runs as its own process (``python bench/loadgen.py ...``) so that it never shares an
interpreter or a GIL with the server it measures. Each client is one asyncio task on one
keep-alive connection that sends a request, reads the whole response, and sends the next
(a closed loop, like ``wrk`` or ``hey -c``). Raw asyncio streams, not an HTTP library: on a
2-core machine the client's own CPU per request is part of what is measured, so it is kept
to a few tens of microseconds. Only loopback addresses are accepted.

Prints one JSON object: requests, errors, seconds, rps and latency percentiles in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import math
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class _Stats:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    first_error: str = ""
    sent: int = 0


def _request_bytes(host: str, port: int, path: str, body: bytes) -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Type: application/json\r\nAccept: */*\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Status, body and whether the server keeps the connection open."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, chunked, keep_alive = None, False, True
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value:
            chunked = True
        elif name == "connection" and value == "close":
            keep_alive = False
    if chunked:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            parts.append(chunk[:-2])
        body = b"".join(parts)
    elif length is not None:
        body = await reader.readexactly(length)
    else:
        body = await reader.read()
        keep_alive = False
    return status, body, keep_alive


async def _client(host: str, port: int, request: bytes, warm_until: float, deadline: float,
                  max_requests: int, stats: _Stats) -> None:
    reader = writer = None
    try:
        while True:
            now = time.perf_counter()
            if now >= deadline or stats.sent >= max_requests:
                return
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            counted = now >= warm_until
            if counted:
                stats.sent += 1
            started = time.perf_counter()
            try:
                writer.write(request)
                status, body, keep_alive = await _read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError) as e:
                if counted:
                    stats.errors += 1
                    stats.first_error = stats.first_error or f"{type(e).__name__}: {e}"
                writer.close()
                reader = writer = None
                await asyncio.sleep(0.01)
                continue
            elapsed = time.perf_counter() - started
            if counted:
                stats.statuses[status] = stats.statuses.get(status, 0) + 1
                if status == 200:
                    stats.latencies.append(elapsed)
                else:
                    stats.errors += 1
                    stats.first_error = stats.first_error or f"HTTP {status}: {body[:200]!r}"
            if not keep_alive:
                writer.close()
                reader = writer = None
    finally:
        if writer is not None:
            writer.close()


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-quantile (0..1) of already sorted values, nearest-rank."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


async def run_load(url: str, body: bytes, *, concurrency: int, duration: float,
                   warmup: float = 0.5, max_requests: int = 1_000_000) -> dict:
    """Runs the closed-loop load and returns its summary (latencies in ms)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 80
    require_loopback(host)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    request = _request_bytes(host, port, path, body)
    stats = _Stats()
    start = time.perf_counter()
    warm_until = start + warmup
    deadline = warm_until + duration
    await asyncio.gather(*(_client(host, port, request, warm_until, deadline, max_requests,
                                   stats) for _ in range(concurrency)))
    seconds = max(1e-9, min(time.perf_counter(), deadline) - warm_until)
    return summarize(url, concurrency, seconds, stats)


def require_loopback(host: str) -> None:
    """Load is only ever sent to this machine's loopback addresses."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise ValueError(f"refusing to load {host!r}: only loopback addresses are allowed")


def summarize(url: str, concurrency: int, seconds: float, stats: _Stats) -> dict:
    """A load run's summary: requests, statuses, req/s and latencies in ms."""
    ms = sorted(v * 1000.0 for v in stats.latencies)
    return {
        "url": url, "concurrency": concurrency, "duration_s": round(seconds, 3),
        "requests": len(ms), "errors": stats.errors, "statuses": stats.statuses,
        "first_error": stats.first_error, "rps": len(ms) / seconds,
        "p50_ms": percentile(ms, 0.50), "p90_ms": percentile(ms, 0.90),
        "p99_ms": percentile(ms, 0.99), "max_ms": ms[-1] if ms else float("nan"),
        "mean_ms": sum(ms) / len(ms) if ms else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: prints the summary as JSON on stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="http://127.0.0.1:PORT/path")
    parser.add_argument("--body-file", required=True, help="request body (JSON)")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds first")
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    with open(args.body_file, "rb") as f:
        body = f.read()
    result = asyncio.run(run_load(args.url, body, concurrency=args.concurrency,
                                  duration=args.duration, warmup=args.warmup,
                                  max_requests=args.max_requests))
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
