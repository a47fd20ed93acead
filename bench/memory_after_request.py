"""Resident memory of the server before, during and after one large request, per allocator.

    .venv/bin/python bench/memory_after_request.py [--n 3000000] [--rows 500000]

Starts ``python -m serving`` on a fresh serving root with ``fun_runif`` and ``sum_two``
(tests' serving_fixtures), warms it up, sends one large request and reads VmRSS from
/proc: idle, peak (sampled every 20 ms), and 2 s after the response. Two requests, each on
a fresh server: a large response (``fun_runif`` ``{"inputs": {"N": n}}``: n float32, about
12 n bytes of JSON) and a large body (``sum_two`` with ``rows`` instances of 3 floats).
Variants:

- ``glibc + trim``: the server as shipped (malloc_trim after large requests);
- ``glibc``: the same with the trim turned off (a sitecustomize in this script's temp
  dir replaces MemoryReleaser.request; benchmark only);
- ``jemalloc`` / ``tcmalloc``: LD_PRELOAD of Debian's libjemalloc2 /
  libtcmalloc-minimal4, when installed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

import httpx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

_NO_TRIM = "import serving.limits as l\nl.MemoryReleaser.request = lambda self: None\n"
_LIBS = {"jemalloc": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
         "tcmalloc": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"}


def _rss_mib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    return 0


def measure(root: str, model: str, body: dict, env_extra: dict[str, str],
            log: str) -> tuple[int, int, int]:
    """(idle, peak, after) RSS in MiB for one server and one request."""
    from tests.serving_fixtures import free_port

    port = free_port()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **env_extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env_extra.get("PYTHONPATH"), REPO) if p)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "serving", "--serving-dir", root,
                                 "--port", str(port), "--grpc-port", "0"],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1/models/{model}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                with open(log, "rb") as f:
                    raise RuntimeError("server did not start:\n" + f.read()[-3000:].decode())
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        warm = {"inputs": {"N": 1000}} if model == "fun_runif" else {"instances": [[1, 2, 3]]}
        for _ in range(3):
            httpx.post(url + ":predict", json=warm)
        time.sleep(1)
        idle = _rss_mib(proc.pid)
        peak = [idle]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _rss_mib(proc.pid))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        response = httpx.post(url + ":predict", json=body, timeout=600)
        done.set()
        sampler.join()
        assert response.status_code == 200, response.text[:300]
        del response
        time.sleep(2)
        return idle, peak[0], _rss_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3_000_000)
    parser.add_argument("--rows", type=int, default=500_000)
    args = parser.parse_args()
    from tests.serving_fixtures import add_version

    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "serving")
        add_version(root, "fun_runif", 1, "fun_runif")
        add_version(root, "sum_two", 1, "sum_two")
        no_trim = os.path.join(tmp, "no_trim")
        os.makedirs(no_trim)
        with open(os.path.join(no_trim, "sitecustomize.py"), "w") as f:
            f.write(_NO_TRIM)
        variants = {"glibc + trim": {}, "glibc": {"PYTHONPATH": no_trim}}
        variants.update({name: {"LD_PRELOAD": path} for name, path in _LIBS.items()
                         if os.path.exists(path)})
        requests = {
            f"response N={args.n}": ("fun_runif", {"inputs": {"N": args.n}}),
            f"body {args.rows}x3": ("sum_two", {"instances": [[0.5, 1.5, 2.5]] * args.rows}),
        }
        print("RSS in MiB")
        print(f"{'request':<20} {'allocator':<14} {'idle':>6} {'peak':>6} {'after':>6} "
              f"{'kept':>6}")
        for label, (model, body) in requests.items():
            for name, env in variants.items():
                idle, peak, after = measure(root, model, body, env,
                                            os.path.join(tmp, "server.log"))
                print(f"{label:<20} {name:<14} {idle:>6} {peak:>6} {after:>6} "
                      f"{after - idle:>+6}", flush=True)


if __name__ == "__main__":
    main()
