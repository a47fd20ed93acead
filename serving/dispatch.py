"""Where a loaded version's calls run: inline on the event loop, or on the thread pool.

Handing a request to a worker thread and back costs two thread wake-ups and
GIL hand-overs, as much as a tiny model's whole call; a call on the event loop
delays every request queued behind it. So a version runs inline only when all
of this holds, else on the pool:

- its warmup requests (``assets.extra/tf_serving_warmup_requests``, replayed
  at load as TF Serving does) took at most :data:`INLINE_MAX_CALL_SECONDS` per
  call (median) for every signature they call. No user graph is run on made-up
  inputs: without warmup records there is no measurement, and the pool is the
  safe choice;
- no signature has a loop (its cost depends on input values, which a warmup
  record does not bound) or ops that write state;
- no signature takes an integer input: an integer may be a size (as
  ``fun_runif``'s ``N``), so a cheap warmup says nothing about the next call.

The decision is taken once per loaded version: timings under load would be
inflated by contention and could flip it back and forth.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from tfserving import json_tensor

# Median warmup call time (input conversion and output fetch included) up to which a
# version runs on the event loop. BENCHMARKS.md has the measurements behind it.
INLINE_MAX_CALL_SECONDS = 1e-3
_LOOP_OPS = frozenset({"While", "StatelessWhile", "_While", "For", "Enter", "RefEnter",
                       "Exit", "RefExit", "NextIteration", "RefNextIteration", "LoopCond"})
_WRITE_OP = re.compile(
    r"Assign|^(Resource)?(Sparse)?Apply|^(Resource)?Scatter(Nd)?(Update|Add|Sub|Mul|Div|Min|Max)"
    r"|^Write|^Save|^MergeV2Checkpoints|^LookupTable(Insert|Import|Remove)|Enqueue")
_INTEGER_DTYPES = frozenset({"DT_INT8", "DT_INT16", "DT_INT32", "DT_INT64", "DT_UINT8",
                             "DT_UINT16", "DT_UINT32", "DT_UINT64"})


def choose(signatures: Mapping[str, json_tensor.SignatureSpec], op_types: set[str],
           warmup_seconds: Mapping[str, float]) -> tuple[bool, str]:
    """(inline?, why) for a version; see the module doc.

    ``op_types`` are the op types of the version's graph (functions included);
    ``warmup_seconds`` the median warmup call time per signature key (empty when
    the version has no warmup records).
    """
    if not warmup_seconds:
        return False, "thread pool (no warmup requests to measure)"
    loops = sorted(op_types & _LOOP_OPS)
    if loops:
        return False, f"thread pool (the graph has a loop ({loops[0]}): its cost depends on input)"
    writes = sorted(op for op in op_types if _WRITE_OP.search(op))
    if writes:
        return False, f"thread pool (the graph writes state ({writes[0]}))"
    for key, sig in sorted(signatures.items()):
        integer = sorted(a for a, t in sig.inputs.items() if t.dtype in _INTEGER_DTYPES)
        if integer:
            return False, (f"thread pool (signature '{key}' takes integer input '{integer[0]}', "
                           "which may be a size)")
    timings = [f"{key} {seconds * 1e3:.2f} ms" for key, seconds in sorted(warmup_seconds.items())]
    slow = [key for key, seconds in warmup_seconds.items() if seconds > INLINE_MAX_CALL_SECONDS]
    limit = f"{INLINE_MAX_CALL_SECONDS * 1e3:g} ms"
    if slow:
        return False, f"thread pool ({', '.join(timings)} per warmup call; > {limit})"
    return True, f"event loop ({', '.join(timings)} per warmup call <= {limit})"


def graph_op_types(graph_def) -> set[str]:
    """Op types in a GraphDef and every function of its library."""
    ops = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        ops.update(node.op for node in function.node_def)
    return ops
