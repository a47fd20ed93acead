"""Serving benchmark: the in-process limit, our REST server, and MLflow's, on one machine.

- In-process limit: fresh processes load each SavedModel as the server does (a session,
  ``tfserving.bundle``) and call its signature's session callable with the request's
  inputs, from one thread and from one thread per core, with one intra-op thread and with
  TensorFlow's default (``python bench/serving_bench.py inprocess``); the limit is the best.
- Transport floors: ``bench/hello_server.py``, a hello-world on the same HTTP stack
  (uvicorn, httptools, uvloop, Starlette) and on the same gRPC stack (``grpc.aio`` on that
  event loop), same load generators, same run.
- Batching: the same server with ``--enable-batching --batching-parameters-file
  bench/batching_parameters.txt``.
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
import shutil
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
# The batching target (issue 17): mobilenet_v2_test at 16 clients, off and on alternating.
AB_CLIENTS, AB_ROUNDS = 16, 3
# The bound of that target: the model's own gain from batching, in-process, one thread per
# core: these rows per call against one row per call, alternating, the median of the
# rounds' ratios (single measurements drift by +-15 % on this VM); the best batch counts.
IN_PROCESS_BATCHES, IN_PROCESS_BATCH_ROUNDS, IN_PROCESS_BATCH_SECONDS = (4, 8, 16), 5, 0.6
# The --batching-parameters-file of the batching rows.
BATCHING_PARAMETERS = os.path.join(ROOT, "bench", "batching_parameters.txt")
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


def hello_grpc_body(name: str) -> bytes:
    """``grpc_body("sum_two", ...)`` without a server to ask for the signature (the
    hello-world has none): the same bytes, for the gRPC transport floor."""
    import numpy as np
    from tensorflow_serving.apis import predict_pb2

    from tfserving import tensor_proto

    if name != "sum_two":
        raise ValueError(f"the hello-world answers sum_two's request only, not {name!r}")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    values = np.array(json.loads(_body(name))["instances"], np.float32)
    tensor_proto.to_proto(values, proto=request.inputs["x"], content=True)
    return request.SerializeToString()


# ---------------------------------------------------------------------- in-process limit


def _callable(path: str, name: str, intra_op_threads: int) -> tuple[Any, list[Any]]:
    """The fastest in-process call of ``name``'s serving signature, and its inputs.

    TF Serving's own call: a session over the SavedModel (``tfserving.bundle``) and the
    lenient callable over the SignatureDef's tensor names that the server builds per
    (signature, inputs, outputs); the inputs are the request body decoded as the server
    decodes it. Falls back to the TF2 signature function when there is no bundle module.
    """
    from tfserving import json_tensor
    from tfserving.saved_model import read_meta_graph, signature_specs

    spec = signature_specs(read_meta_graph(path))["serving_default"]
    _, arrays = json_tensor.decode_predict(json_tensor.parse_json(_body(name)), spec)
    try:
        from tfserving import bundle as bundle_module
    except ImportError:
        bundle_module = None
    if bundle_module is not None and hasattr(bundle_module, "_lenient_callable"):
        # As the server configures a version: intra-op threads as given, TensorFlow's
        # default inter-op pool (one thread per core).
        bundle = bundle_module.load_bundle(path, intra_op_threads=intra_op_threads)
        sig = bundle.signature_defs["serving_default"]
        feeds = sorted(arrays)
        call = bundle_module._lenient_callable(  # noqa: SLF001 - the server's own call
            bundle.session, [sig.inputs[a].name for a in feeds],
            [sig.outputs[a].name for a in sorted(sig.outputs)])
        call._bundle = bundle  # keeps the session alive
        return call, [arrays[a] for a in feeds]
    import tensorflow as tf

    function = tf.saved_model.load(path).signatures["serving_default"]
    feeds = {a: tf.constant(v) for a, v in arrays.items()}
    return (lambda: function(**feeds)), []


def _loop(call: Any, args: list[Any], seconds: float, threads: int) -> dict[str, float]:
    """``threads`` threads calling ``call(*args)`` back to back for ``seconds``."""
    counts = [0] * threads
    samples: list[float] = []
    start = threading.Barrier(threads + 1)
    deadline = [0.0]

    def work(i: int) -> None:
        start.wait()
        n = 0
        while True:
            t = time.perf_counter()
            call(*args)
            if i == 0:
                samples.append(time.perf_counter() - t)
            n += 1
            if t >= deadline[0]:
                break
        counts[i] = n

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    started = time.perf_counter()
    deadline[0] = started + seconds
    start.wait()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    return {"calls": sum(counts), "seconds": elapsed, "calls_per_s": sum(counts) / elapsed,
            "p50_us": statistics.median(samples) * 1e6}


def inprocess(serving_root: str, names: Sequence[str], seconds: float,
              intra_op_threads: int = 1) -> dict[str, Any]:
    """Calls/s of each servable's fastest in-process call, from 1 thread and 1 per core."""
    cores = os.cpu_count() or 1
    results = {}
    for name in names:
        model_root = os.path.join(serving_root, name)
        version = max(int(v) for v in os.listdir(model_root) if v.isdigit())
        call, args = _callable(os.path.join(model_root, str(version)), name, intra_op_threads)
        for _ in range(20):
            call(*args)
        one = _loop(call, args, seconds, 1)
        many = _loop(call, args, seconds, cores)
        results[name] = {"1": one, str(cores): many, "cores": cores,
                         "call": "session callable" if args else "TF2 signature function"}
        # The batching gain at the server's own setting only (run_inprocess reads it there).
        if intra_op_threads == 1 and args and all(
                getattr(a, "ndim", 0) and len(a) == 1 for a in args):
            import numpy as np

            gains: dict[str, list[float]] = {str(n): [] for n in IN_PROCESS_BATCHES}
            for _ in range(IN_PROCESS_BATCH_ROUNDS):
                one_row = _loop(call, args, IN_PROCESS_BATCH_SECONDS, cores)["calls_per_s"]
                for n in IN_PROCESS_BATCHES:
                    rows = [np.concatenate([a] * n) for a in args]
                    calls = _loop(call, rows, IN_PROCESS_BATCH_SECONDS, cores)["calls_per_s"]
                    gains[str(n)].append(calls * n / one_row)
            results[name]["batch_gains"] = gains
    return results


def run_inprocess(serving_root: str, names: Sequence[str], seconds: float) -> dict[str, Any]:
    """The in-process limit: ``inprocess`` in fresh processes (no server, no load running).

    Measured with one intra-op thread (what the server uses on <= 2 CPUs) and with
    TensorFlow's default, each from one thread and from one thread per core; the limit
    of a servable is the best of the four, the multi-thread limit the best with one
    thread per core.
    """
    runs = {}
    for intra in (1, 0):
        out = subprocess.run(
            [PYTHON, os.path.abspath(__file__), "inprocess", "--serving-dir", serving_root,
             "--seconds", str(seconds), "--intra-op-threads", str(intra), *names],
            cwd=ROOT, env=_quiet_env(),
            check=True, capture_output=True, text=True).stdout
        runs[intra] = json.loads(out.strip().splitlines()[-1])
    limits = {}
    for name in names:
        cores = str(runs[1][name]["cores"])
        options = [(runs[intra][name][threads]["calls_per_s"], intra, threads)
                   for intra in runs for threads in ("1", cores)]
        best = max(options)
        multi = max(o for o in options if o[2] == cores)
        limits[name] = {
            "calls_per_s": best[0], "config": f"{best[2]} thread(s), intra-op "
                                              f"{best[1] or 'default'}",
            "multi_thread_calls_per_s": multi[0],
            "single_thread_calls_per_s": max(o[0] for o in options if o[2] == "1"),
            "p50_us": runs[best[1]][name]["1"]["p50_us"], "call": runs[1][name]["call"],
            "runs": {f"intra_{intra or 'default'}": runs[intra][name] for intra in runs}}
        gains = runs[1][name].get("batch_gains")  # the server's setting: one intra-op thread
        if gains:
            rows, gain = max(((n, statistics.median(g)) for n, g in gains.items()),
                             key=lambda item: item[1])
            limits[name]["batch_gain"], limits[name]["batch_rows"] = gain, int(rows)
            limits[name]["batch_gain_rounds"] = len(gains[rows])
    return limits


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
                 grpc_target: str | None = None,
                 grpc_request: Callable[[str, str], bytes] = grpc_body) -> dict[str, Any]:
    """Every load level for every model against one running server.

    ``profile`` names a model: one more 4-client run on it is sampled with py-spy.
    ``grpc_target`` (host:port): the same requests over gRPC too, into ``grpc_models``;
    ``grpc_request(name, target)`` gives each model's serialized request.
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
                f"grpc://{grpc_target}", grpc_request(name, grpc_target))))
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
    ("JSON codec (tfserving/json_tensor.py, orjson)", ("tfserving/json_tensor.py",)),
    ("HTTP/1.1 (uvicorn, httptools/h11, socket writes)", ("h11/", "httptools/", "uvicorn/")),
    ("Starlette", ("starlette/",)),
    ("thread hand-off (anyio.to_thread, wake-ups)", ("anyio/",)),
    ("rest of serving/ (routing, metrics, registry)", ("serving/",)),
)
_TRANSPARENT = ("asyncio/", "threading.py", "selectors.py", "queue.py", "sniffio/",
                "contextlib.py", "<frozen")
# Threads py-spy reports as active while they wait (model-load pool, version poller).
_IDLE_LEAVES = ("_worker (concurrent/futures/thread.py", "_run (serving/registry.py")


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


def serve_command(root: str, port: int, grpc_port: int, batching: bool = False) -> list[str]:
    """``python -m serving`` as the bench runs it (batching with BATCHING_PARAMETERS)."""
    flags = ["--enable-batching", "--batching-parameters-file", BATCHING_PARAMETERS]
    return [PYTHON, "-m", "serving", "--serving-dir", root, "--port", str(port),
            "--grpc-port", str(grpc_port), "--log-level", "warning", *(flags if batching else [])]


def _quiet_env() -> dict[str, str]:
    """The environment of the bench's TensorFlow processes: no TF logs, no warnings."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}


def batching_ab(bench_root: str, name: str, clients: int, rounds: int, duration: float,
                work: str, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Batching off vs on for ``name``: both servers up at once, their loads alternating
    ``rounds`` times, so that both see the same machine state; the ratio is the median of
    the rounds' on/off ratios (a noisy 2-CPU machine drifts between two separate runs)."""
    ports = {"off": free_port(), "on": free_port()}
    body = _body(name)
    out: dict[str, Any] = {"model": name, "clients": clients, "rounds": []}
    with contextlib.ExitStack() as stack:
        pids = {mode: stack.enter_context(server(
            serve_command(bench_root, port, 0, batching=mode == "on"),
            [f"http://127.0.0.1:{port}/v1/models/{name}"],
            os.path.join(work, f"batching-ab-{mode}.log"), _quiet_env()))
            for mode, port in ports.items()}
        for i in range(rounds):
            pair = {mode: run_load(f"http://127.0.0.1:{ports[mode]}/v1/models/{name}:predict",
                                   body, clients, duration, pids[mode], work)
                    for mode in ("off", "on")}
            pair["ratio"] = pair["on"]["rps"] / max(pair["off"]["rps"], 1e-9)
            pair["p99_ratio"] = pair["on"]["p99_ms"] / max(pair["off"]["p99_ms"], 1e-9)
            out["rounds"].append(pair)
            log(f"  batching A/B   {name:<18} {clients:>2} clients round {i + 1}: off "
                f"{pair['off']['rps']:7.1f} req/s, on {pair['on']['rps']:7.1f} req/s "
                f"({pair['ratio']:.2f}x), p99 {pair['off']['p99_ms']:.1f} / "
                f"{pair['on']['p99_ms']:.1f} ms")
    out["ratio"] = statistics.median(r["ratio"] for r in out["rounds"])
    out["p99_ratio"] = statistics.median(r["p99_ratio"] for r in out["rounds"])
    return out


def bench_serving(serving_root: str, names: Sequence[str] = ("sum_two", "mobilenet_v2_test"),
                  duration: float = 5.0, inprocess_seconds: float = 3.0,
                  work: str | None = None, peer: bool = True, profile: bool = True,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """In-process limit, hello-world, our server with batching off and on, MLflow's peer.

    The servers serve a copy of ``names`` from ``serving_root``, without models.config.
    """
    work = work or tempfile.mkdtemp(prefix="bench-serving-")
    os.makedirs(work, exist_ok=True)
    bench_root = os.path.join(work, "serving-root")
    for name in names:
        shutil.copytree(os.path.join(serving_root, name), os.path.join(bench_root, name))
    log("  in-process: session callables, 1 thread and 1 per core ...")
    limit = run_inprocess(serving_root, names, inprocess_seconds)
    for name, r in limit.items():
        log(f"  in-process     {name:<18} {r['calls_per_s']:8.1f} calls/s ({r['config']}); "
            f"{r['multi_thread_calls_per_s']:8.1f} with 1 thread per core")
    hello_port, hello_grpc = free_port(), free_port()
    hello_base = f"http://127.0.0.1:{hello_port}"
    hello = bench_server(
        "hello-world", [PYTHON, os.path.join(ROOT, "bench", "hello_server.py"),
                        "--port", str(hello_port), "--grpc-port", str(hello_grpc)],
        [hello_base + "/"], {"sum_two": f"{hello_base}/v1/models/sum_two:predict"},
        duration, work, log=log, grpc_target=f"127.0.0.1:{hello_grpc}",
        grpc_request=lambda name, _: hello_grpc_body(name))
    port, grpc_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    ours = bench_server(
        "tfx-servables",
        serve_command(bench_root, port, grpc_port),
        [f"{base}/v1/models/{n}" for n in names],
        {n: f"{base}/v1/models/{n}:predict" for n in names}, duration, work, env=_quiet_env(),
        profile="sum_two" if profile and "sum_two" in names else None, log=log,
        grpc_target=f"127.0.0.1:{grpc_port}")
    batching_port, batching_grpc = free_port(), free_port()
    batching_base = f"http://127.0.0.1:{batching_port}"
    batched = bench_server(
        "batching",
        serve_command(bench_root, batching_port, batching_grpc, batching=True),
        [f"{batching_base}/v1/models/{n}" for n in names],
        {n: f"{batching_base}/v1/models/{n}:predict" for n in names}, duration, work,
        env=_quiet_env(), log=log,
        grpc_target=f"127.0.0.1:{batching_grpc}")
    ab = batching_ab(bench_root, "mobilenet_v2_test", AB_CLIENTS, AB_ROUNDS, duration, work,
                     log=log) if "mobilenet_v2_test" in names else None
    result = {"inprocess": limit, "server": ours, "hello": hello, "batching": batched,
              "batching_parameters": open(BATCHING_PARAMETERS, encoding="utf-8").read(),
              "duration_s": duration, "load_levels": list(LOAD_LEVELS)}
    if ab:
        result["batching_ab"] = ab
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
    one.add_argument("--intra-op-threads", type=int, default=1)
    one.add_argument("names", nargs="+")
    every = sub.add_parser("all", help="in-process, server and MLflow peer")
    every.add_argument("--serving-dir", required=True)
    every.add_argument("--duration", type=float, default=5.0)
    every.add_argument("--no-peer", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "inprocess":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        print(json.dumps(inprocess(args.serving_dir, args.names, args.seconds,
                                   args.intra_op_threads)))
        return 0
    result = bench_serving(args.serving_dir, duration=args.duration, peer=not args.no_peer,
                           log=lambda m: print(m, file=sys.stderr))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
