"""Pipeline benchmark: ``runner.py`` against the minimal plain-script floor, as ratios.

Every measurement is a fresh process, as a user runs it: ``python runner.py
--output-dir OUT --catalog PROJECT/servables/catalog.yaml`` and ``python
bench/plain_export.py`` (the floor: no project code at all). Wall time comes from the
parent, CPU time and peak RSS from the child's rusage (``os.wait4``). Each round uses its
own copy of ``servables/`` and ``data/`` and alternates pipeline and floor runs:

    pipeline cold -> floor -> pipeline unchanged -> floor
    -> (edit randomizer.py: maxval) pipeline one-changed -> floor
    -> bench/project_export.py (the project's export code without orchestration)

Exports and pushes are counted from the summary table the runner prints.

    python bench/pipeline_bench.py [--rounds 3] [--profile-dir DIR]   # prints JSON
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
PY_SPY = os.path.join(ROOT, ".venv-bench", "bin", "py-spy")
SCENARIOS = ("cold", "unchanged", "one_changed")
# A real change of the graph (a constant), so the fingerprint changes and version 2 is pushed.
_RANDOMIZER_EDIT = ("tf.random.uniform(shape=(N,))", "tf.random.uniform(shape=(N,), maxval=0.5)")
_IMPORT_PROBE = """
import json, time
t0 = time.perf_counter()
import tensorflow
t1 = time.perf_counter()
import pipeline.local, pipeline.report
from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner
t2 = time.perf_counter()
print(json.dumps({"tensorflow_s": t1 - t0, "tfx_beam_mlmd_s": t2 - t1}))
"""


def _env() -> dict[str, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_measured(cmd: Sequence[str], cwd: str = ROOT, timeout: float = 600) -> dict[str, Any]:
    """Runs ``cmd``; returns wall seconds, peak RSS (MB), exit code, stdout, stderr tail."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=_env(), stdout=out, stderr=err)
        deadline = started + timeout
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, rusage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    return {"seconds": seconds, "peak_rss_mb": rusage.ru_maxrss / 1024.0,
            "cpu_s": rusage.ru_utime + rusage.ru_stime, "returncode": proc.returncode,
            "stdout": stdout, "stderr_tail": stderr[-3000:]}


def parse_summary(stdout: str) -> list[dict[str, str]]:
    """The rows of the runner's summary table (servable, exported, blessed, pushed, path)."""
    rows, in_table = [], False
    for line in stdout.splitlines():
        if line.startswith("servable ") and "exported" in line:
            in_table = True
            continue
        if in_table:
            if not line.strip():
                break
            if set(line.replace(" ", "")) == {"-"}:
                continue
            cells = re.split(r"\s{2,}", line.strip())
            keys = ("servable", "exported", "blessed", "pushed", "path")
            rows.append(dict(zip(keys, cells + [""] * (5 - len(cells)), strict=False)))
    return rows


def run_pipeline(project: str, output_dir: str, extra: Sequence[str] = ()) -> dict[str, Any]:
    """One ``runner.py`` run on ``project``'s catalog; counts exports and pushes."""
    result = run_measured([*extra, PYTHON, os.path.join(ROOT, "runner.py"),
                           "--output-dir", output_dir,
                           "--catalog", os.path.join(project, "servables", "catalog.yaml")])
    rows = parse_summary(result["stdout"])
    result["exports"] = [r["servable"] for r in rows if r["exported"] == "ran"]
    result["pushes"] = [f"{r['servable']} {r['pushed'].replace('version ', 'v')}"
                        for r in rows if r["pushed"].startswith("version")]
    result["rows"] = rows
    result["steps"] = [line.strip() for line in result.pop("stderr_tail").splitlines()
                       if " done in " in line or line.rstrip().endswith("cached")]
    del result["stdout"]
    if result["returncode"] != 0 or len(rows) != 3:
        raise RuntimeError(f"runner.py failed: {result}")
    return result


def run_baseline(project: str, serving_root: str, hub: str) -> dict[str, Any]:
    """One run of the floor, ``bench/plain_export.py``, into a fresh serving root."""
    result = run_measured([PYTHON, os.path.join(ROOT, "bench", "plain_export.py"),
                           "--serving-dir", serving_root,
                           "--data-dir", os.path.join(project, "data"), "--hub-module", hub])
    if result["returncode"] != 0:
        raise RuntimeError(f"plain_export.py failed: {result['stderr_tail']}")
    result["detail"] = json.loads(result.pop("stdout").strip().splitlines()[-1])
    del result["stderr_tail"]
    return result


def run_project_export(project: str, serving_root: str) -> dict[str, Any]:
    """One ``bench/project_export.py`` run: the project's export code, no orchestration."""
    result = run_measured([PYTHON, os.path.join(ROOT, "bench", "project_export.py"),
                           "--serving-dir", serving_root,
                           "--catalog", os.path.join(project, "servables", "catalog.yaml")])
    if result["returncode"] != 0:
        raise RuntimeError(f"project_export.py failed: {result['stderr_tail']}")
    result["detail"] = json.loads(result.pop("stdout").strip().splitlines()[-1])
    del result["stderr_tail"]
    return result


def make_project(parent: str, name: str) -> str:
    """A copy of servables/ and data/ (the catalog's base_dir is its parent)."""
    project = os.path.join(parent, name)
    for sub in ("servables", "data"):
        shutil.copytree(os.path.join(ROOT, sub), os.path.join(project, sub),
                        ignore=shutil.ignore_patterns("__pycache__"))
    return project


def change_one_servable(project: str) -> None:
    """Edits fun_runif's module so that its graph (and fingerprint) really changes."""
    path = os.path.join(project, "servables", "randomizer.py")
    with open(path, encoding="utf-8") as f:
        source = f.read()
    if _RANDOMIZER_EDIT[0] not in source:
        raise RuntimeError(f"{path}: cannot find {_RANDOMIZER_EDIT[0]!r} to edit")
    with open(path, "w", encoding="utf-8") as f:
        f.write(source.replace(*_RANDOMIZER_EDIT))


def import_split() -> dict[str, float]:
    """Seconds to import TensorFlow, then what the runner adds (TFX, Beam, MLMD, ...)."""
    out = subprocess.run([PYTHON, "-c", _IMPORT_PROBE], cwd=ROOT, env=_env(), check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def ensure_hub_standin() -> str:
    """Builds the stand-in hub module (once, cached) so that no timed run builds it."""
    out = subprocess.run([PYTHON, "-c", "from servables.hub_standin import ensure_standin; "
                          "print(ensure_standin())"], cwd=ROOT, env=_env(), check=True,
                         capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1]


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(samples: dict[str, list[dict[str, Any]]],
              imports: list[dict[str, float]]) -> dict[str, Any]:
    """Medians, ratios to the baseline median, peak RSS, exports/pushes per scenario."""
    base = _median([s["seconds"] for s in samples["baseline"]])
    base_cpu = _median([s["cpu_s"] for s in samples["baseline"]])
    summary: dict[str, Any] = {
        "baseline": {"median_s": base, "cpu_s": base_cpu,
                     "peak_rss_mb": max(s["peak_rss_mb"] for s in samples["baseline"]),
                     "import_s": _median([s["detail"]["import_s"] for s in samples["baseline"]]),
                     "runs": len(samples["baseline"])}}
    project = samples.get("project_export") or []
    if project:
        median = _median([s["seconds"] for s in project])
        cpu = _median([s["cpu_s"] for s in project])
        summary["project_export"] = {
            "median_s": median, "ratio": median / base, "cpu_s": cpu,
            "cpu_ratio": cpu / base_cpu, "runs": len(project),
            "peak_rss_mb": max(s["peak_rss_mb"] for s in project)}
    for scenario in SCENARIOS:
        runs = samples[scenario]
        median = _median([s["seconds"] for s in runs])
        cpu = _median([s["cpu_s"] for s in runs])
        summary[scenario] = {
            "median_s": median, "ratio": median / base, "runs": len(runs),
            "cpu_s": cpu, "cpu_ratio": cpu / base_cpu,
            "peak_rss_mb": max(s["peak_rss_mb"] for s in runs),
            "exports": sorted({e for s in runs for e in s["exports"]}),
            "max_exports": max(len(s["exports"]) for s in runs),
            "max_pushes": max(len(s["pushes"]) for s in runs),
            "pushes": sorted({p for s in runs for p in s["pushes"]}),
        }
    tf_s = _median([i["tensorflow_s"] for i in imports])
    tfx_s = _median([i["tfx_beam_mlmd_s"] for i in imports])
    cold = summary["cold"]["median_s"]
    summary["imports"] = {"tensorflow_s": tf_s, "tfx_beam_mlmd_s": tfx_s,
                          "runner_import_s": tf_s + tfx_s,
                          "cold_work_s": cold - tf_s - tfx_s,
                          "baseline_work_s": base - summary["baseline"]["import_s"]}
    return summary


def profile_cold(project: str, work: str, out_dir: str) -> dict[str, Any]:
    """One cold run under py-spy (raw collapsed stacks), with a short breakdown."""
    raw = os.path.join(out_dir, "pipeline-cold.pyspy.txt")
    result = run_pipeline(project, os.path.join(work, "profiled"),
                          extra=[PY_SPY, "record", "--format", "raw", "--rate", "100",
                                 "--nonblocking", "-o", raw, "--"])
    return {"raw": raw, "seconds_under_profiler": result["seconds"],
            "breakdown": profile_breakdown(raw, rate=100)}


_BUCKETS = (  # a stack goes to the first bucket (in this order) one of its frames matches
    ("keras clear_session (gc.collect)", "clear_session ("),
    ("export: tf.saved_model.save", "save (tensorflow/python/saved_model/save.py"),
    ("export: trace signatures", "_concrete_function (components/export_servable"),
    ("export: build object (hub.load)", "servables/mobilenet.py"),
    ("evaluate: load the SavedModel", ("load (tensorflow/python/saved_model/load.py",
                                       "load (tensorflow/python/saved_model/loader_impl.py")),
    ("evaluate: calls and checks", "evaluate (components/servable_evaluator"),
    ("push: copy, fingerprint, models.config", "Do (components/versioned_pusher"),
    ("export: other", "Do (components/export_servable"),
    ("TFX launcher: MLMD, caching, publish", "launch (portable/launcher.py"),
    ("imports: tfx.components (every standard component, TFMA, TFDV, ...)",
     "<module> (tfx/components/__init__.py"),
    ("imports: tfx.types.standard_component_specs (TFMA, TFDV)",
     "<module> (tfx/types/standard_component_specs.py"),
    ("imports: TensorFlow (with Keras)", "<module> (tensorflow/__init__.py"),
    ("imports: the rest (TFX, Beam, ML Metadata, ...)", "_find_and_load ("),
    ("Beam DirectRunner", "apache_beam/"),
)


def stack_frames(stack: str) -> list[str]:
    """The frames of one py-spy raw line, outermost first, without a process/thread label."""
    frames = stack.split(";")
    while frames and frames[0].startswith(("process ", "thread ")):
        frames = frames[1:]
    return frames


def profile_breakdown(raw_path: str, rate: int) -> dict[str, float]:
    """Seconds of the main thread per bucket, from py-spy's raw output."""
    seconds: dict[str, float] = {}
    with open(raw_path, encoding="utf-8") as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            frames = stack_frames(stack)
            if not frames or not frames[0].startswith("<module> (runner.py"):
                continue  # other threads
            bucket = "other"
            for name, needles in _BUCKETS:
                needles = (needles,) if isinstance(needles, str) else needles
                if any(n in frame for frame in frames for n in needles):
                    bucket = name
                    break
            seconds[bucket] = seconds.get(bucket, 0.0) + int(count) / rate
    return dict(sorted(seconds.items(), key=lambda kv: -kv[1]))


def bench_pipeline(rounds: int = 3, work: str | None = None, profile_dir: str | None = None,
                   log=print) -> dict[str, Any]:
    """Runs the alternating rounds; returns raw samples, summary and a serving root."""
    work = work or tempfile.mkdtemp(prefix="bench-pipeline-")
    hub = ensure_hub_standin()
    import_split()  # warms the page cache: the first timed run must not pay for the disk
    samples: dict[str, list[dict[str, Any]]] = {
        k: [] for k in (*SCENARIOS, "baseline", "project_export")}
    imports = []
    serving_root = ""
    for i in range(rounds):
        project = make_project(work, f"round{i}")
        out = os.path.join(project, "outputs")
        steps = [("cold", None), ("baseline", "a"), ("unchanged", None), ("baseline", "b"),
                 ("one_changed", None), ("baseline", "c"), ("project_export", None)]
        for scenario, tag in steps:
            if scenario == "baseline":
                sample = run_baseline(project, os.path.join(project, f"plain-{tag}"), hub)
            elif scenario == "project_export":
                sample = run_project_export(project, os.path.join(project, "project-export"))
            else:
                if scenario == "one_changed":
                    change_one_servable(project)
                sample = run_pipeline(project, out)
            samples[scenario].append(sample)
            log(f"  round {i + 1}/{rounds} {scenario:<12} {sample['seconds']:6.1f} s  "
                f"peak RSS {sample['peak_rss_mb']:6.0f} MB"
                + (f"  exports={len(sample['exports'])} pushes={len(sample['pushes'])}"
                   if scenario in SCENARIOS else ""))
        imports.append(import_split())
        serving_root = os.path.join(out, "serving")
    result = {"samples": samples, "imports": imports, "hub_standin": hub,
              "summary": summarize(samples, imports), "serving_root": serving_root,
              "work_dir": work}
    if profile_dir:
        log("  profiling one cold run with py-spy ...")
        result["profile"] = profile_cold(make_project(work, "profile"), work, profile_dir)
    return result


def main(argv: list[str] | None = None) -> int:
    """Command line: prints the result as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile-dir", default=None,
                        help="also profile one cold run with py-spy (needs make setup-bench)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as work:
        result = bench_pipeline(args.rounds, work, args.profile_dir,
                                log=lambda m: print(m, file=sys.stderr))
    print(json.dumps(result["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
