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
inflated by contention and could flip it back and forth. An inline version also
runs its ops on the calling thread instead of the session's inter-op pool
(:meth:`tfserving.bundle.SavedModelBundle.run_on_caller_thread`): for such small
graphs that pool's two thread hand-offs per call cost more than the ops.
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


def signature_op_types(meta_graph, keys) -> set[str]:
    """Op types the signatures ``keys`` can run: the nodes their outputs depend on, and the
    functions those call (transitively). Save/restore and other graph parts are left out."""
    graph = meta_graph.graph_def
    nodes = {node.name: node for node in graph.node}
    functions = {f.signature.name: f for f in graph.library.function}
    ops: set[str] = set()
    pending = [info.name.split(":")[0].lstrip("^")
               for key in keys for info in meta_graph.signature_def[key].outputs.values()]
    seen_nodes: set[str] = set()
    seen_functions: set[str] = set()

    def called(node) -> list[str]:
        names = [node.op] if node.op in functions else []
        for attr in node.attr.values():
            if attr.HasField("func"):
                names.append(attr.func.name)
            names.extend(f.name for f in attr.list.func)
        return names

    calls: list[str] = []
    while pending:
        name = pending.pop()
        if name in seen_nodes or name not in nodes:
            continue
        seen_nodes.add(name)
        node = nodes[name]
        ops.add(node.op)
        calls.extend(called(node))
        pending.extend(i.split(":")[0].lstrip("^") for i in node.input)
    while calls:
        name = calls.pop()
        if name in seen_functions or name not in functions:
            continue
        seen_functions.add(name)
        for node in functions[name].node_def:
            ops.add(node.op)
            calls.extend(called(node))
    return ops
