"""``make bench``: the pipeline and the server against their limits, side by side, as ratios.

Runs ``bench/pipeline_bench.py`` (pipeline vs the minimal plain-script floor) and then
``bench/serving_bench.py`` (in-process limit, hello-world transport floor, our server over
REST and gRPC with batching off and on, MLflow's) on the serving root the last pipeline run
published. Writes ``bench/results/<UTC timestamp>.json`` (raw), ``.md`` (the tables) and
``.png`` (throughput and p99 against client count), prints the tables, copies the plot to
``bench/serving.png`` and puts the tables into ``BENCHMARKS.md`` between its
``<!-- bench:begin -->`` / ``<!-- bench:end -->`` markers.

    .venv/bin/python bench/run_all.py [--rounds 3] [--duration 5] [--quick] [--no-profile]
                                      [--no-peer] [--pipeline-from JSON] [--serving-root DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
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
    try:
        info["loadavg"] = " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
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
    """The targets of issues 17 and 20 (and 15's gRPC one), measured, and whether met."""
    rows = []

    def add(name: str, measured: str, met: bool) -> None:
        rows.append({"target": name, "measured": measured, "met": bool(met)})

    cold, same, one = p["cold"], p["unchanged"], p["one_changed"]
    add("cold run ≤ 1.3× the floor", f"{cold['ratio']:.2f}× (CPU time {cold['cpu_ratio']:.2f}×)",
        cold["ratio"] <= 1.3)
    add("unchanged re-run ≤ 0.5× the floor, 0 exports, 0 pushes",
        f"{same['ratio']:.2f}×, {same['max_exports']} exports, {same['max_pushes']} pushes",
        same["ratio"] <= 0.5 and same["max_exports"] == 0 and same["max_pushes"] == 0)
    add("one servable changed ≤ 0.6× the floor, only it re-exported",
        f"{one['ratio']:.2f}×, exports {', '.join(one['exports']) or 'none'}; "
        f"pushes {', '.join(one['pushes']) or 'none'}",
        one["ratio"] <= 0.6 and one["exports"] == ["fun_runif"] and one["max_pushes"] == 1)
    add("peak RSS of a cold run ≤ 1.0 GB", f"{cold['peak_rss_mb']:,.0f} MB",
        cold["peak_rss_mb"] <= 1000)
    limit = s["inprocess"]
    ours = s["server"]["models"]
    hello = s.get("hello", {}).get("models", {}).get("sum_two")
    if "sum_two" in ours and hello:
        four, floor = ours["sum_two"]["4"]["rps"], hello["4"]["rps"]
        add("REST sum_two, 4 clients ≥ 0.25× the hello-world floor's req/s (issue 20)",
            f"{four / floor:.2f}× ({_rps(four)} vs {_rps(floor)} req/s)", four / floor >= 0.25)
    grpc_floor = s.get("hello", {}).get("grpc_models", {}).get("sum_two", {})
    for name, rest in ours.items():  # issue 15: gRPC at least as fast as REST
        grpc = s["server"].get("grpc_models", {}).get(name)
        if grpc:
            ratios = {c: grpc[c]["rps"] / max(rest[c]["rps"], 1e-9) for c in rest if c in grpc}
            measured = ", ".join(f"{r:.2f}× ({c})" for c, r in ratios.items())
            if name == "sum_two" and grpc_floor:
                # What no servicer code can beat: grpc.aio answering a constant.
                measured += "; the gRPC hello-world itself: " + ", ".join(
                    f"{grpc_floor[c]['rps'] / max(rest[c]['rps'], 1e-9):.2f}× ({c})"
                    for c in rest if c in grpc_floor)
            add(f"{name}: gRPC req/s ≥ REST req/s (1, 4, 16 clients)", measured,
                all(r >= 1.0 for r in ratios.values()))
    if "mobilenet_v2_test" in ours:
        four = ours["mobilenet_v2_test"]["4"]["rps"]
        multi = limit["mobilenet_v2_test"]["multi_thread_calls_per_s"]
        add("REST mobilenet_v2_test, 4 clients ≥ 0.8× the multi-thread in-process limit",
            f"{four / multi:.2f}× ({_rps(four)} vs {_rps(multi)}/s)", four / multi >= 0.8)
        ab = s.get("batching_ab")  # the bench measures the target A/B (serving_bench)
        if ab:
            rounds = ", ".join(f"{r['ratio']:.2f}×" for r in ab["rounds"])
            model = limit["mobilenet_v2_test"]
            bound = (f"; the model's own gain in-process, without a server ({model['batch_rows']}"
                     f" images per call vs 1, one thread per core, median of "
                     f"{model['batch_gain_rounds']} alternating rounds): "
                     f"{model['batch_gain']:.2f}×" if "batch_gain" in model else "")
            add(f"mobilenet_v2_test, {ab['clients']} clients, batching on ≥ 1.3× the req/s of "
                "off, p99 ≤ 2×", f"{ab['ratio']:.2f}× req/s (median of {len(ab['rounds'])} "
                f"alternating rounds: {rounds}), p99 {ab['p99_ratio']:.2f}×{bound}",
                ab["ratio"] >= 1.3 and ab["p99_ratio"] <= 2)
    return rows


# ------------------------------------------------------------------------------ markdown

PLOT = os.path.join(ROOT, "bench", "serving.png")


def serving_series(s: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """servable -> series label -> {clients: run}, for the table and the plot."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    mlflow = s.get("mlflow", {})
    sources = (
        ("REST", s["server"].get("models", {})),
        ("gRPC", s["server"].get("grpc_models", {})),
        ("REST, batching", s.get("batching", {}).get("models", {})),
        ("gRPC, batching", s.get("batching", {}).get("grpc_models", {})),
        (f"MLflow {mlflow.get('version', '')} (1 worker)", mlflow.get("models", {})),
        ("hello-world (transport floor)", s.get("hello", {}).get("models", {})),
        ("gRPC hello-world (transport floor)", s.get("hello", {}).get("grpc_models", {})),
    )
    for label, models in sources:
        for name, levels in models.items():
            if levels:
                out.setdefault(name, {})[label] = levels
    return out


def plot(s: dict[str, Any], path: str) -> str:
    """Throughput and p99 against client count, one row per servable; writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = serving_series(s)
    names = [n for n in ("sum_two", "mobilenet_v2_test") if n in series]
    fig, axes = plt.subplots(len(names), 2, figsize=(11, 4.2 * len(names)), squeeze=False)
    styles = {"REST": "-o", "gRPC": "-s", "REST, batching": "--o", "gRPC, batching": "--s",
              "hello-world (transport floor)": ":^",
              "gRPC hello-world (transport floor)": ":v"}
    for row, name in enumerate(names):
        ax_rps, ax_p99 = axes[row]
        for label, levels in series[name].items():
            clients = sorted(int(c) for c in levels)
            style = styles.get(label, "-.x")
            ax_rps.plot(clients, [levels[str(c)]["rps"] for c in clients], style, label=label)
            if "hello-world" not in label:
                ax_p99.plot(clients, [levels[str(c)]["p99_ms"] for c in clients], style,
                            label=label)
        limit = s["inprocess"].get(name)
        if limit:
            ax_rps.axhline(limit["calls_per_s"], color="grey", linestyle="--", linewidth=1,
                           label=f"in-process limit ({limit['config']})")
        for ax, title in ((ax_rps, "throughput (req/s)"), (ax_p99, "p99 latency (ms)")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks([1, 4, 16], ["1", "4", "16"])
            ax.set_xlabel("concurrent clients")
            ax.set_title(f"{name}: {title}")
            ax.grid(True, which="both", alpha=0.3)
        ax_rps.legend(fontsize=7)
        ax_p99.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def render(result: dict[str, Any], plot_path: str | None = None) -> str:
    """The Markdown report of one run."""
    m, p = result["machine"], result["pipeline"]["summary"]
    s = result["serving"]
    lines = [
        f"Run {result['started_utc']} UTC, commit `{m.get('commit', '?')}`"
        f"{' (with uncommitted changes)' if m.get('dirty') else ''}; "
        f"`{result['command']}` took {result['wall_s'] / 60:.1f} min.",
        "",
        f"Machine: {m.get('cpu', '?')}, {m['nproc']} CPUs (nproc), {m.get('ram_gib', '?')} GiB "
        f"RAM, Linux {m['kernel']}; Python {m['python']}, TensorFlow {m.get('tensorflow', '?')}, "
        f"TFX {m.get('tfx', '?')}, Beam {m.get('apache_beam', '?')}, uvicorn "
        f"{m.get('uvicorn', '?')} (httptools + uvloop when installed); "
        f"peer: MLflow {s.get('mlflow', {}).get('version', '-')}. Load average when it "
        f"started: {m.get('loadavg', '?')} (other work on the machine inflates wall times; "
        "CPU time is the steadier measure).",
        "",
        f"### Pipeline (median of {p['cold']['runs']} runs each, alternating with the floor)",
        "",
        "| run | median wall | × floor | CPU time | CPU × floor | exported | pushed | peak RSS |",
        "|---|---:|---:|---:|---:|---|---|---:|",
        f"| **floor**: `bench/plain_export.py` (no project code) | "
        f"{p['baseline']['median_s']:.1f} s | 1.00 | {p['baseline']['cpu_s']:.1f} s | 1.00 | "
        f"all 3 | all 3 (v1) | {p['baseline']['peak_rss_mb']:,.0f} MB |",
    ]
    pe = p.get("project_export")
    if pe:
        lines.append(
            f"| the project's export code without orchestration (`bench/project_export.py`) | "
            f"{pe['median_s']:.1f} s | {pe['ratio']:.2f} | {pe['cpu_s']:.1f} s | "
            f"{pe['cpu_ratio']:.2f} | all 3 | all 3 (v1) | {pe['peak_rss_mb']:,.0f} MB |")
    names = {"cold": "cold (fresh output dir)", "unchanged": "unchanged re-run",
             "one_changed": "one servable changed (fun_runif)"}
    for key in ("cold", "unchanged", "one_changed"):
        r = p[key]
        lines.append(
            f"| {names[key]} | {r['median_s']:.1f} s | {r['ratio']:.2f} | {r['cpu_s']:.1f} s | "
            f"{r['cpu_ratio']:.2f} | {', '.join(r['exports']) or 'none'} | "
            f"{', '.join(r['pushes']) or 'none'} | {r['peak_rss_mb']:,.0f} MB |")
    i = p["imports"]
    lines += [
        "",
        f"Import time vs work: the runner imports TensorFlow ({i['tensorflow_s']:.1f} s) and "
        f"then TFX, Beam and ML Metadata ({i['tfx_beam_mlmd_s']:.1f} s): "
        f"{i['runner_import_s']:.1f} s of the {p['cold']['median_s']:.1f} s cold run, leaving "
        f"{i['cold_work_s']:.1f} s of work and orchestration; the floor imports for "
        f"{p['baseline']['import_s']:.1f} s and works {i['baseline_work_s']:.1f} s.",
    ]
    profile = result["pipeline"].get("profile")
    if profile:
        lines += ["", f"Profile of one more cold run (py-spy at 100 Hz, main thread; "
                  f"{profile['seconds_under_profiler']:.1f} s under the profiler):", "",
                  "| where | s |", "|---|---:|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in profile["breakdown"].items()]

    lines += ["", f"### Serving ({s['duration_s']:.0f} s per load level after 0.5 s warm-up; "
              "closed-loop keep-alive clients from a second process)", ""]
    if plot_path:
        lines += [f"![throughput and p99 against client count]({plot_path})", ""]
    lines += ["| servable | server | clients | req/s | × in-process limit | × hello-world | "
              "p50 ms | p99 ms | server CPU µs/req |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    # Each API against its own floor: REST rows against the HTTP hello-world, gRPC rows
    # against the gRPC one.
    floors = {"REST": s.get("hello", {}).get("models", {}).get("sum_two", {}),
              "gRPC": s.get("hello", {}).get("grpc_models", {}).get("sum_two", {})}
    for name, series in serving_series(s).items():
        limit = s["inprocess"].get(name)
        if limit:
            for label, key in (("1 thread", "single_thread_calls_per_s"),
                               ("1 thread per core", "multi_thread_calls_per_s")):
                lines.append(f"| {name} | in-process: {limit['call']} | {label} | "
                             f"{_rps(limit[key])} | {limit[key] / limit['calls_per_s']:.2f} | "
                             "– | – | – | – |")
        for label, levels in series.items():
            for clients, r in levels.items():
                n = r["requests"] * (r["duration_s"] + 0.5) / r["duration_s"] or 1
                vs_limit = f"{r['rps'] / limit['calls_per_s']:.2f}" if limit else "–"
                hello = floors["gRPC" if label.startswith("gRPC") else "REST"]
                vs_hello = (f"{r['rps'] / hello[clients]['rps']:.2f}"
                            if name == "sum_two" and clients in hello and "MLflow" not in label
                            else "–")
                lines.append(
                    f"| {name} | {label} | {clients} | {_rps(r['rps'])} | {vs_limit} | "
                    f"{vs_hello} | {_fmt_ms(r['p50_ms'])} | {_fmt_ms(r['p99_ms'])} | "
                    f"{r['server_cpu_s'] / n * 1e6:,.0f} |"
                    + (f" ({r['errors']} errors)" if r["errors"] else ""))
    params = s.get("batching_parameters")
    if params:
        settings = "; ".join(line.strip() for line in params.splitlines()
                             if line.strip() and not line.startswith("#"))
        lines += ["", f"Batching rows: `--enable-batching --batching-parameters-file "
                  f"bench/batching_parameters.txt` ({settings})."]
        for name in ("sum_two", "mobilenet_v2_test"):
            on = s.get("batching", {}).get("models", {}).get(name, {})
            off = s["server"].get("models", {}).get(name, {})
            for clients in ("4", "16"):
                if clients in on and clients in off:
                    on_r, off_r = on[clients], off[clients]
                    lines.append(
                        f"With {clients} clients, batching on vs off for `{name}`: "
                        f"{on_r['rps'] / max(off_r['rps'], 1e-9):.2f}× the req/s "
                        f"({_rps(on_r['rps'])} vs {_rps(off_r['rps'])}), p99 "
                        f"{_fmt_ms(on_r['p99_ms'])} vs {_fmt_ms(off_r['p99_ms'])} ms.")
    ab = s.get("batching_ab")
    if ab:
        lines += ["", f"Batching A/B for the target (`{ab['model']}`, {ab['clients']} clients; "
                  "a server with batching off and one with it on, both up, loads alternating):",
                  "", "| round | off: req/s, p99 | on: req/s, p99 | on ÷ off |",
                  "|---:|---|---|---:|"]
        for i, r in enumerate(ab["rounds"], 1):
            lines.append(f"| {i} | {_rps(r['off']['rps'])}, {_fmt_ms(r['off']['p99_ms'])} ms | "
                         f"{_rps(r['on']['rps'])}, {_fmt_ms(r['on']['p99_ms'])} ms | "
                         f"{r['ratio']:.2f}× |")
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
    parser.add_argument("--pipeline-from", metavar="JSON",
                        help="reuse the pipeline part of an earlier bench/results/*.json "
                             "(its serving root must still exist, else pass --serving-root)")
    parser.add_argument("--serving-root", help="serve this root instead of the pipeline's")
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
        if args.pipeline_from:
            with open(args.pipeline_from, encoding="utf-8") as f:
                pipe = json.load(f)["pipeline"]
            log(f"pipeline: reused from {args.pipeline_from}")
        else:
            log(f"pipeline: {args.rounds} round(s) of cold / unchanged / one-changed vs "
                "the floor")
            pipe = pipeline_bench.bench_pipeline(args.rounds, os.path.join(work, "pipeline"),
                                                 log=log)
            if not args.no_profile and os.access(pipeline_bench.PY_SPY, os.X_OK):
                log("pipeline: profiling one cold run with py-spy")
                pipe["profile"] = pipeline_bench.profile_cold(
                    pipeline_bench.make_project(work, "profile"), work, work)
        summary = pipe["summary"]
        result["pipeline"] = pipe
        root = args.serving_root or pipe["serving_root"]
        log(f"serving: in-process limit, hello-world, tfx-servables (batching off and on) "
            f"and the MLflow peer, {args.duration:g} s per load level")
        result["serving"] = serving_bench.bench_serving(
            root, duration=args.duration, work=os.path.join(work, "serving"),
            peer=not args.no_peer, profile=not args.no_profile, log=log)
    result["targets"] = targets(summary, result["serving"])
    result["wall_s"] = time.perf_counter() - started
    name = stamp.strftime("%Y%m%dT%H%M%SZ")
    png = plot(result["serving"], os.path.join(RESULTS, f"{name}.png"))
    if not args.quick:
        shutil.copyfile(png, PLOT)
    table = render(result, os.path.relpath(PLOT if not args.quick else png, ROOT))
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
