"""Serving benchmark: the in-process limit, our REST server, and MLflow's, on one machine.

- In-process limit: a separate process loads each SavedModel and calls its serving
  signature in a loop with the same inputs (``python bench/serving_bench.py inprocess``).
- Server: ``python -m serving`` on 127.0.0.1; ``bench/loadgen.py`` in a second process
  sends the same body with 1, 4 and 16 keep-alive clients for a fixed time. The same
  server process then gets the same request over gRPC (``bench/grpc_loadgen.py``: a
  ``PredictRequest`` as ``ServingClient("grpc://...")`` builds it), same client counts.
- Peer: ``mlflow models serve`` (``bench/mlflow_peer.py``), same bodies, same load.

CPU seconds of the server (and its children) and of the load generator are recorded
per load level: on 2 cores they share the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
PY_SPY = os.path.join(ROOT, ".venv-bench", "bin", "py-spy")
LOAD_LEVELS = (1, 4, 16)
# What each servable is sent: the catalog's example (sum_two as the issue states it).
BODIES = {
    "sum_two": b'{"instances": [[1,2,3]]}',
    "mobilenet_v2_test": None,  # data/requests/mobilenet_v2_test.json, a b64 JPEG
}


def _body(name: str) -> bytes:
    if BODIES.get(name):
        return BODIES[name]
    with open(os.path.join(ROOT, "data", "requests", f"{name}.json"), "rb") as f:
        return f.read()


def grpc_body(name: str, target: str) -> bytes:
    """``_body(name)`` as the serialized PredictRequest the gRPC client sends for it.

    The same values (a JPEG's raw bytes instead of base64); numbers as tensor_content,
    as ``tf.make_tensor_proto`` and ``ServingClient("grpc://...")`` write them.
    """
    from serving.client import ServingClient, decode_b64

    doc = json.loads(_body(name))
    with ServingClient(f"grpc://{target}") as client:
        key = "instances" if "instances" in doc else "inputs"
        request = client.predict_request(name, **{key: decode_b64(doc[key])},
                                         signature_name=doc.get("signature_name"))
    return request.SerializeToString()


# ---------------------------------------------------------------------- in-process limit


def inprocess(serving_root: str, names: Sequence[str], seconds: float) -> dict[str, Any]:
    """Calls each servable's loaded signature in a loop; calls/s and µs per call."""
    import tensorflow as tf

    from bench.plain_export import request_inputs
    from pipeline.catalog import load_catalog

    catalog = {s.name: s for s in load_catalog(None).servables}
    results = {}
    for name in names:
        model_root = os.path.join(serving_root, name)
        version = max(int(v) for v in os.listdir(model_root) if v.isdigit())
        loaded = tf.saved_model.load(os.path.join(model_root, str(version)))
        signature = loaded.signatures["serving_default"]
        request = (json.loads(BODIES[name]) if BODIES.get(name)
                   else catalog[name].examples[0].request)
        inputs = request_inputs(request, signature)
        for _ in range(20):
            signature(**inputs)
        calls, started = 0, time.perf_counter()
        deadline = started + seconds
        samples = []
        while True:
            t = time.perf_counter()
            signature(**inputs)
            samples.append(time.perf_counter() - t)
            calls += 1
            if t >= deadline:
                break
        elapsed = time.perf_counter() - started
        results[name] = {"calls": calls, "seconds": elapsed, "calls_per_s": calls / elapsed,
                         "mean_us": elapsed / calls * 1e6,
                         "p50_us": statistics.median(samples) * 1e6}
    return results


def run_inprocess(serving_root: str, names: Sequence[str], seconds: float) -> dict[str, Any]:
    """``inprocess`` in a fresh process (no server, no load generator running)."""
    out = subprocess.run(
        [PYTHON, os.path.abspath(__file__), "inprocess", "--serving-dir", serving_root,
         "--seconds", str(seconds), *names],
        cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"},
        check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# ---------------------------------------------------------------------- servers and load


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _process_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its children (psutil, in .venv)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            total += t.user + t.system
    return total


@contextlib.contextmanager
def server(cmd: Sequence[str], ready_urls: Sequence[str], log_path: str,
           env: Mapping[str, str] | None = None, timeout: float = 180) -> Iterator[int]:
    """Starts a server in its own process group, waits until every URL answers 200."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(list(cmd), cwd=ROOT, env=dict(env or os.environ), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        pending = list(ready_urls)
        while pending:
            if proc.poll() is not None:
                with open(log_path, errors="replace") as f:
                    raise RuntimeError(f"{cmd[0]} exited with {proc.returncode}:\n"
                                       f"{f.read()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{cmd} not ready after {timeout}s (see {log_path})")
            try:
                with urllib.request.urlopen(pending[0], timeout=2) as response:
                    if response.status == 200:
                        pending.pop(0)
                        continue
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        yield proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the group this function started
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_load(url: str, body: bytes, concurrency: int, duration: float, server_pid: int,
             work: str) -> dict[str, Any]:
    """One ``bench/loadgen.py`` process; adds its CPU seconds and the server's."""
    body_file = os.path.join(work, "body.bin")
    with open(body_file, "wb") as f:
        f.write(body)
    server_cpu = _process_cpu(server_pid)
    if url.startswith("grpc://"):  # a serialized PredictRequest to grpc://host:port
        target = ["bench/grpc_loadgen.py", "--target", url[len("grpc://"):]]
    else:
        target = ["bench/loadgen.py", "--url", url]
    proc = subprocess.Popen(
        [PYTHON, os.path.join(ROOT, target[0]), *target[1:], "--body-file",
         body_file, "--concurrency", str(concurrency), "--duration", str(duration),
         "--warmup", "0.5"], cwd=ROOT, stdout=subprocess.PIPE)
    watchdog = threading.Timer(duration + 60, proc.kill)
    watchdog.start()
    try:
        stdout = proc.stdout.read()
        _, status, rusage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        watchdog.cancel()
        proc.stdout.close()
    if proc.returncode != 0:
        raise RuntimeError(f"loadgen failed ({proc.returncode}) against {url}")
    result = json.loads(stdout)
    result["server_cpu_s"] = _process_cpu(server_pid) - server_cpu
    result["loadgen_cpu_s"] = rusage.ru_utime + rusage.ru_stime
    return result


def bench_server(label: str, cmd: Sequence[str], ready_urls: Sequence[str],
                 urls: Mapping[str, str], duration: float, work: str,
                 env: Mapping[str, str] | None = None, profile: str | None = None,
                 log: Callable[[str], None] = print,
                 grpc_target: str | None = None) -> dict[str, Any]:
    """Every load level for every model against one running server.

    ``profile`` names a model: one more 4-client run on it is sampled with py-spy.
    ``grpc_target`` (host:port): the same requests over gRPC too, into ``grpc_models``.
    """
    results: dict[str, Any] = {}
    started = time.perf_counter()
    out: dict[str, Any] = {}
    with server(cmd, ready_urls, os.path.join(work, f"{label}.log"), env) as pid:
        out["startup_s"] = time.perf_counter() - started
        # REST and gRPC alternate per load level, so both see the same machine state.
        runs = [(label, results, lambda name, url: (url, _body(name)))]
        if grpc_target:
            out["grpc_models"] = {}
            runs.append((f"{label} gRPC", out["grpc_models"], lambda name, url: (
                f"grpc://{grpc_target}", grpc_body(name, grpc_target))))
        for name, url in urls.items():
            for _, store, _ in runs:
                store[name] = {}
            requests = [(tag, store, *request(name, url)) for tag, store, request in runs]
            for clients in LOAD_LEVELS:
                for tag, store, target, body in requests:
                    r = run_load(target, body, clients, duration, pid, work)
                    store[name][str(clients)] = r
                    log(f"  {tag:<14} {name:<18} {clients:>2} clients {r['rps']:8.1f} req/s  "
                        f"p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  "
                        f"errors {r['errors']}")
        if profile and os.access(PY_SPY, os.X_OK):
            out["profile"] = profile_server(pid, urls[profile], _body(profile), duration, work)
            out["profile"]["model"] = profile
    out["models"] = results
    return out


# From the innermost frame outwards, the first frame of one of these decides the bucket;
# frames of the generic plumbing (_TRANSPARENT) are skipped over.
_SERVER_BUCKETS = (
    ("TensorFlow (signature call, tensor conversion)", ("tensorflow/",)),
    ("JSON codec (serving/codec.py, orjson)", ("serving/codec.py",)),
    ("HTTP/1.1 (uvicorn, httptools/h11, socket writes)", ("h11/", "httptools/", "uvicorn/")),
    ("Starlette", ("starlette/",)),
    ("thread hand-off (anyio.to_thread, wake-ups)", ("anyio/",)),
    ("rest of serving/ (routing, metrics, registry)", ("serving/",)),
)
_TRANSPARENT = ("asyncio/", "threading.py", "selectors.py", "queue.py", "sniffio/",
                "contextlib.py", "<frozen")
# Threads py-spy reports as active while they wait (model-load pool, version poller).
_IDLE_LEAVES = ("_worker (concurrent/futures/thread.py", "_run (serving/models.py")


def server_profile_buckets(raw_path: str, rate: int) -> dict[str, Any]:
    """Seconds per bucket and the most sampled innermost frames, from py-spy raw output."""
    from bench.pipeline_bench import stack_frames

    seconds: dict[str, float] = {}
    leaves: dict[str, float] = {}
    with open(raw_path, encoding="utf-8") as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            frames = stack_frames(stack)
            if not frames or frames[-1].startswith(_IDLE_LEAVES):
                continue
            bucket = "other"
            for frame in reversed(frames):
                if any(t in frame for t in _TRANSPARENT):
                    continue
                bucket = next((b for b, needles in _SERVER_BUCKETS
                               if any(n in frame for n in needles)), "other")
                break
            seconds[bucket] = seconds.get(bucket, 0.0) + int(count) / rate
            leaf = frames[-1].split(" (")[0] + " (" + frames[-1].split(" (")[-1].split(":")[0]
            leaves[leaf] = leaves.get(leaf, 0.0) + int(count) / rate
    total = sum(seconds.values()) or 1.0
    top = sorted(leaves.items(), key=lambda kv: -kv[1])[:10]
    return {"sampled_thread_s": total,
            "share": {k: v / total for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])},
            "top_leaf_frames": {k: v / total for k, v in top}}


def profile_server(pid: int, url: str, body: bytes, duration: float,
                   work: str) -> dict[str, Any]:
    """py-spy samples of the server under a 4-client load, grouped into buckets."""
    raw = os.path.join(work, "server-profile.txt")
    rate = 200
    spy = subprocess.Popen([PY_SPY, "record", "--format", "raw", "--rate", str(rate),
                            "--nonblocking", "--duration", str(int(duration) + 1), "-o", raw,
                            "--pid", str(pid)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    load = run_load(url, body, 4, duration, pid, work)
    spy.wait(timeout=duration + 30)
    return {"rps_under_profiler": load["rps"], **server_profile_buckets(raw, rate)}


def bench_mlflow(serving_root: str, names: Sequence[str], duration: float, work: str,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """The MLflow peer: one ``mlflow models serve`` per model, same load."""
    from bench import mlflow_peer

    if not mlflow_peer.available():
        return {"skipped": "no .venv-bench (run `make setup-bench`)"}
    saved = {}
    for name in names:
        model_root = os.path.join(serving_root, name)
        version = max(int(v) for v in os.listdir(model_root) if v.isdigit())
        saved[name] = os.path.join(model_root, str(version))
    dirs = mlflow_peer.prepare(saved, os.path.join(work, "mlflow-models"))
    result: dict[str, Any] = {"version": mlflow_peer.version(), "models": {}, "startup_s": {}}
    for name, model_dir in dirs.items():
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        one = bench_server(f"mlflow-{name}", mlflow_peer.serve_command(model_dir, port),
                           [base + mlflow_peer.READY_PATH],
                           {name: base + mlflow_peer.INVOCATIONS_PATH}, duration, work,
                           env=mlflow_peer.peer_env(), log=log)
        result["models"][name] = one["models"][name]
        result["startup_s"][name] = one["startup_s"]
    return result


def bench_serving(serving_root: str, names: Sequence[str] = ("sum_two", "mobilenet_v2_test"),
                  duration: float = 5.0, inprocess_seconds: float = 3.0,
                  work: str | None = None, peer: bool = True, profile: bool = True,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """In-process limit, our server, and the MLflow peer (when installed)."""
    work = work or tempfile.mkdtemp(prefix="bench-serving-")
    os.makedirs(work, exist_ok=True)
    all_names = sorted(os.listdir(serving_root))
    all_names = [n for n in all_names if os.path.isdir(os.path.join(serving_root, n))
                 and not n.startswith(".")]
    log("  in-process signature calls ...")
    limit = run_inprocess(serving_root, all_names, inprocess_seconds)
    for name, r in limit.items():
        log(f"  in-process     {name:<18} {r['calls_per_s']:8.1f} calls/s  "
            f"{r['mean_us']:8.1f} µs/call")
    port, grpc_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    ours = bench_server(
        "tfx-servables",
        [PYTHON, "-m", "serving", "--serving-dir", serving_root, "--port", str(port),
         "--grpc-port", str(grpc_port), "--log-level", "warning"],
        [f"{base}/v1/models/{n}" for n in names],
        {n: f"{base}/v1/models/{n}:predict" for n in names}, duration, work,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"},
        profile="sum_two" if profile and "sum_two" in names else None, log=log,
        grpc_target=f"127.0.0.1:{grpc_port}")
    result = {"inprocess": limit, "server": ours, "duration_s": duration,
              "load_levels": list(LOAD_LEVELS)}
    if peer:
        result["mlflow"] = bench_mlflow(serving_root, names, duration, work, log=log)
    return result


def main(argv: list[str] | None = None) -> int:
    """``inprocess`` (used by run_inprocess) or ``all``; prints JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("inprocess", help="signature calls in a loop")
    one.add_argument("--serving-dir", required=True)
    one.add_argument("--seconds", type=float, default=3.0)
    one.add_argument("names", nargs="+")
    every = sub.add_parser("all", help="in-process, server and MLflow peer")
    every.add_argument("--serving-dir", required=True)
    every.add_argument("--duration", type=float, default=5.0)
    every.add_argument("--no-peer", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "inprocess":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        print(json.dumps(inprocess(args.serving_dir, args.names, args.seconds)))
        return 0
    result = bench_serving(args.serving_dir, duration=args.duration, peer=not args.no_peer,
                           log=lambda m: print(m, file=sys.stderr))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
