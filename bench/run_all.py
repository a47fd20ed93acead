"""``make bench``: the pipeline and the server against their limits, side by side, as ratios.

Runs ``bench/pipeline_bench.py`` (pipeline vs the plain-script baseline) and then
``bench/serving_bench.py`` (in-process limit, our server, MLflow's) on the serving root
the last pipeline run published. Writes ``bench/results/<UTC timestamp>.json`` (raw)
and ``.md`` (the table), prints the table, and puts it into ``BENCHMARKS.md`` between
its ``<!-- bench:begin -->`` / ``<!-- bench:end -->`` markers.

    .venv/bin/python bench/run_all.py [--rounds 3] [--duration 5] [--quick] [--no-profile]
                                      [--no-peer]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import pipeline_bench, serving_bench  # noqa: E402 - needs ROOT on sys.path

RESULTS = os.path.join(ROOT, "bench", "results")
BENCHMARKS_MD = os.path.join(ROOT, "BENCHMARKS.md")
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def machine() -> dict[str, Any]:
    """What the numbers came from: CPU, cores, RAM, versions, commit."""
    info: dict[str, Any] = {"nproc": os.cpu_count(), "python": platform.python_version(),
                            "kernel": platform.release()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            info["cpu"] = next((line.split(":", 1)[1].strip() for line in f
                                if line.startswith("model name")), "?")
        with open("/proc/meminfo", encoding="utf-8") as f:
            kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
            info["ram_gib"] = round(kb / 1024 / 1024, 1)
    except (OSError, StopIteration):
        pass
    for key, cmd in (("commit", ["git", "rev-parse", "--short", "HEAD"]),
                     ("dirty", ["git", "status", "--porcelain", "--untracked-files=no"])):
        try:
            out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                                 timeout=10).stdout.strip()
            info[key] = bool(out) if key == "dirty" else out
        except (OSError, subprocess.SubprocessError):
            pass
    out = subprocess.run([pipeline_bench.PYTHON, "-c",
                          "import importlib.metadata as m; print(m.version('tensorflow'), "
                          "m.version('tfx'), m.version('apache-beam'), m.version('uvicorn'))"],
                         capture_output=True, text=True).stdout.split()
    if len(out) == 4:
        info.update(tensorflow=out[0], tfx=out[1], apache_beam=out[2], uvicorn=out[3])
    return info


# ------------------------------------------------------------------------------ targets


def _fmt_ms(v: float) -> str:
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 10 else f"{v:.1f}"


def _rps(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def targets(p: dict[str, Any], s: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of issue 9 with its measured value and whether it is met."""
    rows = []

    def add(name: str, measured: str, met: bool) -> None:
        rows.append({"target": name, "measured": measured, "met": bool(met)})

    cold, same, one = p["cold"], p["unchanged"], p["one_changed"]
    add("pipeline cold ≤ 1.5× baseline", f"{cold['ratio']:.2f}×", cold["ratio"] <= 1.5)
    add("unchanged re-run ≤ 1.0× baseline, 0 exports, 0 pushes",
        f"{same['ratio']:.2f}×, {same['max_exports']} exports, {same['max_pushes']} pushes",
        same["ratio"] <= 1.0 and same["max_exports"] == 0 and same["max_pushes"] == 0)
    add("one changed ≤ 1.2× baseline, re-exports only that servable",
        f"{one['ratio']:.2f}×, exports {', '.join(one['exports']) or 'none'}; "
        f"pushes {', '.join(one['pushes']) or 'none'}",
        one["ratio"] <= 1.2 and one["exports"] == ["fun_runif"] and one["max_pushes"] == 1)
    peak = max(p[k]["peak_rss_mb"] for k in ("cold", "unchanged", "one_changed"))
    add("pipeline peak RSS ≤ 1.5 GB", f"{peak:,.0f} MB", peak <= 1536)
    limit = s["inprocess"]
    ours = s["server"]["models"]
    if "sum_two" in ours:
        one_client = ours["sum_two"]["1"]
        four = ours["sum_two"]["4"]
        add("sum_two p50 ≤ 1.0 ms with 1 client", f"{_fmt_ms(one_client['p50_ms'])} ms",
            one_client["p50_ms"] <= 1.0)
        ratio = four["rps"] / limit["sum_two"]["calls_per_s"]
        add("sum_two, 4 clients ≥ 0.25× in-process call rate",
            f"{ratio:.2f}× ({_rps(four['rps'])} vs {_rps(limit['sum_two']['calls_per_s'])}/s)",
            ratio >= 0.25)
        peer = s.get("mlflow", {}).get("models", {}).get("sum_two")
        if peer:
            vs = four["rps"] / peer["4"]["rps"]
            add("sum_two, 4 clients ≥ 2× the MLflow peer",
                f"{vs:.2f}× ({_rps(four['rps'])} vs {_rps(peer['4']['rps'])} req/s)", vs >= 2)
        p99 = ours["sum_two"]["16"]["p99_ms"]
        add("sum_two p99 ≤ 50 ms with 16 clients", f"{_fmt_ms(p99)} ms", p99 <= 50)
    if "mobilenet_v2_test" in ours:
        four = ours["mobilenet_v2_test"]["4"]
        ratio = four["rps"] / limit["mobilenet_v2_test"]["calls_per_s"]
        add("mobilenet_v2_test, 4 clients ≥ 0.9× in-process single-thread throughput",
            f"{ratio:.2f}× ({_rps(four['rps'])} vs "
            f"{_rps(limit['mobilenet_v2_test']['calls_per_s'])}/s)", ratio >= 0.9)
    return rows


# ------------------------------------------------------------------------------ markdown


def render(result: dict[str, Any]) -> str:
    """The Markdown report of one run."""
    m, p = result["machine"], result["pipeline"]["summary"]
    s = result["serving"]
    lines = [
        f"Run {result['started_utc']} UTC, commit `{m.get('commit', '?')}`"
        f"{' (with uncommitted changes)' if m.get('dirty') else ''}; "
        f"`make bench` took {result['wall_s'] / 60:.1f} min.",
        "",
        f"Machine: {m.get('cpu', '?')}, {m['nproc']} CPUs (nproc), {m.get('ram_gib', '?')} GiB "
        f"RAM, Linux {m['kernel']}; Python {m['python']}, TensorFlow {m.get('tensorflow', '?')}, "
        f"TFX {m.get('tfx', '?')}, Beam {m.get('apache_beam', '?')}, uvicorn "
        f"{m.get('uvicorn', '?')} (httptools + uvloop when installed); "
        f"peer: MLflow {s.get('mlflow', {}).get('version', '-')}."
        , "",
        f"Command: `{result['command']}`", "",
        f"### Pipeline (median of {p['cold']['runs']} runs each, alternating with the baseline)",
        "",
        "| run | median | × baseline | target | exported | pushed | peak RSS |",
        "|---|---:|---:|---|---|---|---:|",
        f"| baseline: `bench/plain_export.py` | {p['baseline']['median_s']:.1f} s | 1.00 | "
        f"the floor | all 3 | all 3 (v1) | {p['baseline']['peak_rss_mb']:,.0f} MB |",
    ]
    names = {"cold": "cold (fresh output dir)", "unchanged": "unchanged re-run",
             "one_changed": "one servable changed (fun_runif)"}
    goals = {"cold": "≤ 1.5", "unchanged": "≤ 1.0, nothing exported or pushed",
             "one_changed": "≤ 1.2, only fun_runif"}
    for key in ("cold", "unchanged", "one_changed"):
        r = p[key]
        lines.append(
            f"| {names[key]} | {r['median_s']:.1f} s | {r['ratio']:.2f} | {goals[key]} | "
            f"{', '.join(r['exports']) or 'none'} | {', '.join(r['pushes']) or 'none'} | "
            f"{r['peak_rss_mb']:,.0f} MB |")
    i = p["imports"]
    lines += [
        "",
        f"Import time vs work: the runner imports TensorFlow ({i['tensorflow_s']:.1f} s) and "
        f"then TFX, Beam and ML Metadata ({i['tfx_beam_mlmd_s']:.1f} s): "
        f"{i['runner_import_s']:.1f} s of the {p['cold']['median_s']:.1f} s cold run, leaving "
        f"{i['cold_work_s']:.1f} s of work and orchestration; the baseline imports for "
        f"{p['baseline']['import_s']:.1f} s and works {i['baseline_work_s']:.1f} s.",
    ]
    profile = result["pipeline"].get("profile")
    if profile:
        lines += ["", f"Profile of one more cold run (py-spy at 100 Hz, main thread; "
                  f"{profile['seconds_under_profiler']:.1f} s under the profiler):", "",
                  "| where | s |", "|---|---:|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in profile["breakdown"].items()]

    lines += ["", f"### Serving ({s['duration_s']:.0f} s per load level after 0.5 s warm-up; "
              "closed-loop keep-alive clients from a second process)", "",
              "| servable | server | clients | req/s | × in-process | p50 ms | p99 ms | "
              "server CPU µs/req |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    peers = s.get("mlflow", {}).get("models", {})
    peer_label = f"MLflow {s.get('mlflow', {}).get('version', '')} pyfunc, 1 worker"
    for name, levels in s["server"]["models"].items():
        limit = s["inprocess"][name]
        lines.append(f"| {name} | in-process signature call | 1 thread | "
                     f"{_rps(limit['calls_per_s'])} | 1.00 | {_fmt_ms(limit['p50_us'] / 1000)} | "
                     "– | – |")
        for label, runs in (("tfx-servables", levels), (peer_label, peers.get(name))):
            for clients, r in (runs or {}).items():
                n = r["requests"] * (r["duration_s"] + 0.5) / r["duration_s"] or 1
                lines.append(
                    f"| {name} | {label} | {clients} | {_rps(r['rps'])} | "
                    f"{r['rps'] / limit['calls_per_s']:.2f} | {_fmt_ms(r['p50_ms'])} | "
                    f"{_fmt_ms(r['p99_ms'])} | {r['server_cpu_s'] / n * 1e6:,.0f} |"
                    + (f" ({r['errors']} errors)" if r["errors"] else ""))
    lines += ["", "Server-side batching: `serving/` does not merge concurrent requests yet, so "
              "there is no batching row."]
    if "skipped" in s.get("mlflow", {}):
        lines += ["", f"MLflow peer skipped: {s['mlflow']['skipped']}."]
    sp = s["server"].get("profile")
    if sp:
        lines += ["", f"Where our server spends its time ({sp['model']}, 4 clients, py-spy, "
                  "share of sampled thread time):", "", "| where | share |", "|---|---:|"]
        lines += [f"| {k} | {v:.0%} |" for k, v in sp["share"].items()]
    lines += ["", "### Targets", "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |"
              for t in result["targets"]]
    return "\n".join(lines) + "\n"


def update_benchmarks_md(table: str) -> None:
    """Replaces the generated part of BENCHMARKS.md (between the markers)."""
    block = f"{BEGIN}\n{table}{END}"
    try:
        with open(BENCHMARKS_MD, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        text = "# Benchmarks\n\n"
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n## Latest results\n\n" + block + "\n"
    with open(BENCHMARKS_MD, "w", encoding="utf-8") as f:
        f.write(text)


def main(argv: list[str] | None = None) -> int:
    """Runs everything, writes the results, prints the table; exit 0 even if targets miss."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="pipeline rounds (median)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load level")
    parser.add_argument("--quick", action="store_true",
                        help="1 round, 2 s per load level; BENCHMARKS.md is left alone")
    parser.add_argument("--no-profile", action="store_true",
                        help="skip the py-spy profiles (pipeline cold run, server under load)")
    parser.add_argument("--no-peer", action="store_true", help="skip the MLflow peer")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration = 1, 2.0
    started = time.perf_counter()
    stamp = dt.datetime.now(dt.timezone.utc)
    command = "make bench" if os.environ.get("MAKELEVEL") else shlex.join(
        [".venv/bin/python", "bench/run_all.py", *(argv if argv is not None else sys.argv[1:])])

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    os.makedirs(RESULTS, exist_ok=True)
    result: dict[str, Any] = {"started_utc": stamp.strftime("%Y-%m-%d %H:%M"),
                              "command": command, "machine": machine()}
    with tempfile.TemporaryDirectory(prefix="tfx-servables-bench-") as work:
        log(f"pipeline: {args.rounds} round(s) of cold / unchanged / one-changed vs baseline")
        pipe = pipeline_bench.bench_pipeline(args.rounds, os.path.join(work, "pipeline"),
                                             log=log)
        summary = pipe["summary"]
        if not args.no_profile and os.access(pipeline_bench.PY_SPY, os.X_OK):
            log("pipeline: profiling one cold run with py-spy")
            pipe["profile"] = pipeline_bench.profile_cold(
                pipeline_bench.make_project(work, "profile"), work, work)
        result["pipeline"] = pipe
        log(f"serving: in-process limit, tfx-servables and the MLflow peer, "
            f"{args.duration:g} s per load level")
        result["serving"] = serving_bench.bench_serving(
            pipe["serving_root"], duration=args.duration, work=os.path.join(work, "serving"),
            peer=not args.no_peer, profile=not args.no_profile, log=log)
    result["targets"] = targets(summary, result["serving"])
    result["wall_s"] = time.perf_counter() - started
    table = render(result)
    name = stamp.strftime("%Y%m%dT%H%M%SZ")
    with open(os.path.join(RESULTS, f"{name}.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1, default=str)
    with open(os.path.join(RESULTS, f"{name}.md"), "w", encoding="utf-8") as f:
        f.write(table)
    if not args.quick:
        update_benchmarks_md(table)
    print(table)
    print(f"results: bench/results/{name}.json, bench/results/{name}.md"
          + ("" if args.quick else "; BENCHMARKS.md updated"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
