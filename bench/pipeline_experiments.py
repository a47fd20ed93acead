"""A/B experiments on the pipeline's cold run: what a proposed change saves, measured.

Each variant is a scratch copy of the project's code (``runner.py``, ``pipeline/``,
``components/``, ``tfserving/``, ``serving/``, ``servables/``, ``data/``) with one change
applied to the copy, never to the working tree. Cold runs (fresh output directory) of every
variant and of the floor (``bench/plain_export.py``) alternate, round after round, so that
a drifting machine load hits all of them alike. Reports the median wall time, CPU time
(user + system of the run, less sensitive to other load on a shared machine) and peak RSS.

    .venv/bin/python bench/pipeline_experiments.py [--rounds 3] [--variants a,b,...]

Variants (see ``VARIANTS``):

- ``base``: the code as it is (since b2e883b it includes ``applied``: to measure what that
  change saves, run this file from a checkout of the commit before it).
- ``gc_freeze``: ``gc.freeze()`` once the run's imports are done, so that the full
  ``gc.collect()`` in ``keras.backend.clear_session()`` (every export) and Python's own
  generation-2 collections no longer walk the ≈ 1 GB of TensorFlow/TFX/Beam objects.
- ``no_gc_in_clear_session``: ``clear_session(free_memory=False)`` in the export.
- ``lazy_tfx_components``: ``tfx.components`` registered as a lazy package before TFX is
  imported (its submodules import as usual; its ``__init__``, which imports every standard
  component with TFMA, TFDV, Transform, BigQuery and Kubernetes clients, runs only if one
  of its attributes is used), and the pusher executor without
  ``tfx.components.pusher.executor`` (which imports ``standard_component_specs``, hence
  TFMA and TFDV).
- ``beam_2_threads``: ``--beam-arg=--direct_num_workers=2
  --beam-arg=--direct_running_mode=multi_threading``.
- ``local_orchestrator``: ``--orchestrator local`` (TFX's LocalDagRunner).
- ``combined``: ``gc_freeze`` + ``lazy_tfx_components``.
- ``gc_collect_freeze``, ``combined_collect``: the same with one ``gc.collect()`` before the
  freeze (garbage of the imports is freed, not frozen).
- ``applied``: the proposal in the form it was applied in b2e883b: ``pipeline/tfx_imports.py``
  (``lazy_tfx_components()`` before the pipeline is imported, ``settle_heap()`` after; since
  73bed2f ``frozen_imports()`` around the imports instead) and the pusher on
  ``components/versioned_pusher/pusher_base.py``.
- ``floor_2_procs``: the floor split over two concurrent processes (MobileNet | the two
  small servables): the most that running independent branches concurrently could give on
  this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import pipeline_bench  # noqa: E402 - needs ROOT on sys.path

CODE = ("runner.py", "pipeline", "components", "tfserving", "serving", "servables", "data")

# Registers tfx.components as a package whose __init__ runs on first attribute access.
_LAZY_TFX_COMPONENTS = '''
def _lazy_tfx_components() -> None:
    """Keeps TFX's launcher from importing every standard component (see bench/)."""
    import importlib.util
    import types

    if "tfx.components" in sys.modules:
        return
    spec = importlib.util.find_spec("tfx.components")
    if spec is None or not spec.submodule_search_locations:
        return

    class _Lazy(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            with open(spec.origin, encoding="utf-8") as f:
                code = compile(f.read(), spec.origin, "exec")
            del type(self).__getattr__
            exec(code, self.__dict__)  # noqa: S102 - the real package __init__
            return getattr(self, name)

    module = _Lazy("tfx.components")
    module.__file__, module.__spec__ = spec.origin, spec
    module.__path__ = list(spec.submodule_search_locations)
    module.__package__ = "tfx.components"
    sys.modules["tfx.components"] = module


_lazy_tfx_components()
'''

_PUSHER_BASE = '''
from tfx.dsl.components.base import base_executor
from tfx.utils import path_utils


class _PusherBase(base_executor.BaseExecutor):
    """What the VersionedPusher used from TFX's Pusher executor (same properties)."""

    def CheckBlessing(self, input_dict):  # noqa: N802
        blessings = input_dict.get("model_blessing")
        if blessings:
            return artifact_utils.get_single_instance(blessings).get_int_custom_property(
                "blessed") == 1
        return True

    def GetModelPath(self, input_dict):  # noqa: N802
        model = artifact_utils.get_single_instance(input_dict["model"])
        return path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))

    def _MarkPushed(self, model_push, pushed_destination, pushed_version=None):  # noqa: N802
        model_push.set_int_custom_property("pushed", 1)
        model_push.set_string_custom_property("pushed_destination", pushed_destination)
        if pushed_version is not None:
            model_push.set_string_custom_property("pushed_version", pushed_version)

    def _MarkNotPushed(self, model_push):  # noqa: N802
        model_push.set_int_custom_property("pushed", 0)
'''


def _edit(path: str, old: str, new: str, count: int = 1) -> None:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if old not in text:
        raise RuntimeError(f"{path}: cannot find {old[:60]!r} to edit")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text.replace(old, new, count))


def _gc_freeze(copy: str, collect: bool = False) -> None:
    _edit(os.path.join(copy, "runner.py"), "    from pipeline import local, report\n",
          "    from pipeline import local, report\n"
          "    from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner  # noqa: F401\n"
          "    import gc\n\n" + ("    gc.collect()\n" if collect else "") +
          "    gc.freeze()  # imports done: later collections skip them\n")


def _no_gc_in_clear_session(copy: str) -> None:
    _edit(os.path.join(copy, "components", "export_servable", "export.py"),
          "tf.keras.backend.clear_session()", "tf.keras.backend.clear_session(free_memory=False)")


def _already_applied(copy: str) -> bool:
    """Since b2e883b the code itself does what ``lazy_tfx_components``/``applied`` add."""
    with open(os.path.join(copy, "runner.py"), encoding="utf-8") as f:
        return "tfx_imports.lazy_tfx_components()" in f.read()


def _lazy_tfx(copy: str) -> None:
    if _already_applied(copy):
        return
    runner = os.path.join(copy, "runner.py")
    _edit(runner, "\ndef main(", _LAZY_TFX_COMPONENTS + "\n\ndef main(")
    executor = os.path.join(copy, "components", "versioned_pusher", "executor.py")
    _edit(executor, "from tfx.components.pusher import executor as tfx_pusher_executor\n", "")
    _edit(executor, "\nclass Executor(tfx_pusher_executor.Executor):",
          _PUSHER_BASE + "\n\nclass Executor(_PusherBase):")


_RUNNER_APPLIED = """    from pipeline import tfx_imports

    tfx_imports.lazy_tfx_components()  # imports the run does not need (BENCHMARKS.md)
    from pipeline import local, report

    tfx_imports.settle_heap(args.orchestrator)  # full collections skip the import heap
"""


def _applied(copy: str) -> None:
    """The proposal as applied: pipeline/tfx_imports.py and pusher_base.py, two edits."""
    if _already_applied(copy):
        return
    _edit(os.path.join(copy, "runner.py"), "    from pipeline import local, report\n",
          _RUNNER_APPLIED)
    executor = os.path.join(copy, "components", "versioned_pusher", "executor.py")
    _edit(executor, "from tfx.components.pusher import executor as tfx_pusher_executor\n", "")
    _edit(executor, "from components.versioned_pusher.publish import publish\n",
          "from components.versioned_pusher.publish import publish\n"
          "from components.versioned_pusher.pusher_base import PusherBase\n")
    _edit(executor, "class Executor(tfx_pusher_executor.Executor):", "class Executor(PusherBase):")


VARIANTS: dict[str, tuple[Callable[[str], None] | None, list[str]]] = {
    "base": (None, []),
    "gc_freeze": (_gc_freeze, []),
    "gc_collect_freeze": (lambda c: _gc_freeze(c, collect=True), []),
    "no_gc_in_clear_session": (_no_gc_in_clear_session, []),
    "lazy_tfx_components": (_lazy_tfx, []),
    "beam_2_threads": (None, ["--beam-arg=--direct_num_workers=2",
                              "--beam-arg=--direct_running_mode=multi_threading"]),
    "local_orchestrator": (None, ["--orchestrator", "local"]),
    "combined": (lambda c: (_gc_freeze(c), _lazy_tfx(c)), []),
    "combined_collect": (lambda c: (_gc_freeze(c, collect=True), _lazy_tfx(c)), []),
    "applied": (_applied, []),
}


def make_copy(work: str, name: str) -> str:
    """A scratch copy of the code with variant ``name`` applied."""
    copy = os.path.join(work, f"code-{name}")
    os.makedirs(copy)
    for item in CODE:
        src = os.path.join(ROOT, item)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(copy, item),
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, os.path.join(copy, item))
    apply = VARIANTS[name][0]
    if apply:
        apply(copy)
    return copy


def run_variant(copy: str, extra: list[str], out: str, expect_pushes: int = 3) -> dict[str, Any]:
    """One cold run of a variant's ``runner.py`` (its own code first on sys.path)."""
    env_path = copy + os.pathsep + os.environ.get("PYTHONPATH", "")
    result = _measured([pipeline_bench.PYTHON, os.path.join(copy, "runner.py"),
                        "--output-dir", out, "--catalog",
                        os.path.join(copy, "servables", "catalog.yaml"), *extra],
                       cwd=copy, pythonpath=env_path)
    rows = pipeline_bench.parse_summary(result.pop("stdout"))
    pushed = [r for r in rows if r.get("pushed", "").startswith("version")]
    if result["returncode"] != 0 or len(pushed) != expect_pushes:
        raise RuntimeError(f"variant run failed: {result['stderr_tail']}")
    return result


def _measured(cmd: list[str], cwd: str, pythonpath: str) -> dict[str, Any]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": pythonpath}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err)
        _, status, rusage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        return {"seconds": seconds, "cpu_s": rusage.ru_utime + rusage.ru_stime,
                "peak_rss_mb": rusage.ru_maxrss / 1024, "returncode":
                os.waitstatus_to_exitcode(status), "stdout": out.read().decode(errors="replace"),
                "stderr_tail": err.read().decode(errors="replace")[-3000:]}


def run_scenarios(copy: str, extra: list[str], out: str,
                  scenarios: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """A cold run, then (if asked) an unchanged re-run and a one-servable-changed run."""
    results = [("cold", run_variant(copy, extra, out))]
    if "unchanged" in scenarios or "one_changed" in scenarios:
        results.append(("unchanged", run_variant(copy, extra, out, expect_pushes=0)))
    if "one_changed" in scenarios:
        module = os.path.join(copy, "servables", "randomizer.py")
        with open(module, encoding="utf-8") as f:
            original = f.read()
        pipeline_bench.change_one_servable(copy)
        try:
            results.append(("one_changed", run_variant(copy, extra, out, expect_pushes=1)))
        finally:
            with open(module, "w", encoding="utf-8") as f:
                f.write(original)
    return [(name, r) for name, r in results if name in scenarios]


def _log(i: int, label: str, r: dict[str, Any]) -> None:
    print(f"round {i + 1} {label:<34} {r['seconds']:6.1f} s wall {r['cpu_s']:6.1f} s CPU "
          f"{r['peak_rss_mb']:6.0f} MB", file=sys.stderr, flush=True)


def run_floor(copy: str, out: str, hub: str, split: bool = False) -> dict[str, Any]:
    """The floor, in one process, or split over two concurrent processes."""
    base = [pipeline_bench.PYTHON, os.path.join(ROOT, "bench", "plain_export.py"),
            "--data-dir", os.path.join(copy, "data"), "--hub-module", hub]
    if not split:
        r = _measured([*base, "--serving-dir", out], cwd=ROOT, pythonpath="")
        r.pop("stdout")
        return r
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    started = time.perf_counter()
    procs = [subprocess.Popen([*base, "--serving-dir", out, "--servables", names], cwd=ROOT,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for names in ("mobilenet_v2_test", "sum_two,fun_runif")]
    cpu = rss = 0.0
    for proc in procs:
        _, status, rusage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError("split floor failed")
        cpu += rusage.ru_utime + rusage.ru_stime
        rss += rusage.ru_maxrss / 1024
    return {"seconds": time.perf_counter() - started, "cpu_s": cpu, "peak_rss_mb": rss}


def main(argv: list[str] | None = None) -> int:
    """Alternating cold runs of the chosen variants and the floor; prints a table + JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default=",".join([*VARIANTS, "floor_2_procs"]))
    parser.add_argument("--scenarios", default="cold",
                        help="comma-separated: cold, unchanged (a re-run after the cold "
                             "run), one_changed (fun_runif edited after that)")
    parser.add_argument("--json", default=None, help="also write the samples here")
    args = parser.parse_args(argv)
    names = [n for n in args.variants.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS and n != "floor_2_procs"]
    if unknown:
        parser.error(f"unknown variants {unknown}; valid: {', '.join(VARIANTS)}, floor_2_procs")
    hub = pipeline_bench.ensure_hub_standin()
    scenarios = [x for x in args.scenarios.split(",") if x]
    samples: dict[str, list[dict[str, Any]]] = {"floor": []}
    for n in names:
        for scenario in (scenarios if n in VARIANTS else ["cold"]):
            samples[n if scenario == "cold" else f"{n} {scenario}"] = []
    with tempfile.TemporaryDirectory(prefix="bench-experiments-") as work:
        copies = {n: make_copy(work, n) for n in names if n in VARIANTS}
        base_copy = copies.get("base") or make_copy(work, "base")
        pipeline_bench.import_split()  # page cache
        for i in range(args.rounds):
            for name in ["floor", *names]:
                out = os.path.join(work, f"out-{name}-{i}")
                if name == "floor":
                    r = run_floor(base_copy, out, hub)
                elif name == "floor_2_procs":
                    r = run_floor(base_copy, out, hub, split=True)
                else:
                    for scenario, r in run_scenarios(copies[name], VARIANTS[name][1], out,
                                                     scenarios):
                        label = name if scenario == "cold" else f"{name} {scenario}"
                        samples[label].append(
                            {k: r[k] for k in ("seconds", "cpu_s", "peak_rss_mb")})
                        _log(i, label, r)
                    shutil.rmtree(out, ignore_errors=True)
                    continue
                samples[name].append({k: r[k] for k in ("seconds", "cpu_s", "peak_rss_mb")})
                _log(i, name, r)
                shutil.rmtree(out, ignore_errors=True)
    floor = {k: statistics.median(s[k] for s in samples["floor"]) for k in ("seconds", "cpu_s")}
    print("| variant | wall (median) | × floor | CPU (median) | CPU × floor | "
          "Δ CPU vs base | peak RSS |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, runs in samples.items():
        if not runs:
            continue
        wall = statistics.median(s["seconds"] for s in runs)
        cpu = statistics.median(s["cpu_s"] for s in runs)
        rss = max(s["peak_rss_mb"] for s in runs)
        scenario = name.partition(" ")[2]
        base = samples.get(f"base {scenario}".strip())
        delta = (f"{cpu - statistics.median(s['cpu_s'] for s in base):+.1f} s"
                 if base and name != "floor" else "–")
        print(f"| {name} | {wall:.1f} s | {wall / floor['seconds']:.2f} | {cpu:.1f} s | "
              f"{cpu / floor['cpu_s']:.2f} | {delta} | {rss:,.0f} MB |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(samples, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
