"""Writing float tensors as TF Serving's REST JSON (tfserving.json_tensor) against orjson.

TF Serving writes floats with WriteDecimal (six significant digits when they read back,
else nine), which no JSON library does; orjson's shortest form is the floor. Prints the
best of ``--repeat`` timings per case, in milliseconds:

    .venv/bin/python bench/float_text.py [--repeat 30] [--rev GIT_REV]

``--rev`` also times tfserving/json_tensor.py as it was at that git revision (loaded from
``git show``), for before/after figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tfserving import json_tensor  # noqa: E402 - after the path is set


def _cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((64, 1001)) * 5
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return {
        "normal float32 64x1001": rng.standard_normal((64, 1001)).astype(np.float32),
        "softmax float32 64x1001": softmax.astype(np.float32),
        "2-decimal float32 64x1001": np.float32(np.round(rng.uniform(0, 100, (64, 1001)), 2)),
        "relu float32 64x1001": np.maximum(rng.standard_normal((64, 1001)), 0).astype(
            np.float32),
        "normal float64 64x1001": rng.standard_normal((64, 1001)),
    }


def _best(fn: Callable[[], Any], repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best * 1e3


def _module_at(rev: str) -> Any:
    source = subprocess.run(["git", "show", f"{rev}:tfserving/json_tensor.py"], cwd=REPO,
                            check=True, capture_output=True, text=True).stdout
    path = os.path.join(tempfile.mkdtemp(), "json_tensor_at_rev.py")
    with open(path, "w") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("json_tensor_at_rev", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--rev", help="also time json_tensor.py at this git revision")
    args = parser.parse_args()
    modules = {"now": json_tensor}
    if args.rev:
        modules[args.rev] = _module_at(args.rev)
    header = f"{'case':28s} {'orjson':>8s}" + "".join(
        f" {name + ' texts':>14s} {name + ' body':>14s}" for name in modules)
    print(header)
    for name, arr in _cases().items():
        line = f"{name:28s} {_best(lambda: orjson.dumps(arr, option=orjson.OPT_SERIALIZE_NUMPY), args.repeat):8.2f}"  # noqa: E501, B023
        for module in modules.values():
            texts = _best(lambda: module.float_texts(arr), args.repeat)  # noqa: B023
            body = _best(lambda: module.encode_predict({"y": arr}, module.ROW),  # noqa: B023
                         args.repeat)
            line += f" {texts:14.2f} {body:14.2f}"
        print(line)


if __name__ == "__main__":
    main()
