"""Counters of what happened outside a request's own status, in Prometheus text format.

Requests are counted per status in :mod:`serving.metrics` (TF Serving's names). These
are the server's own events, which TF Serving has no metric for, under this project's
prefix:

- ``:tfx_servables:serving_root_scan_errors{model_name}``: a listing of the serving root
  or a model directory failed (``EMFILE``, ``EIO``, ...); the served versions were kept;
- ``:tfx_servables:connections_refused{reason="max_connections"}``: connections closed
  with 503 at once because ``--max-connections`` were open;
- ``:tfx_servables:connection_timeouts{phase="headers"|"body"}``: connections closed
  because a request did not arrive within ``--header-timeout`` / ``--body-timeout``;
- ``:tfx_servables:memory_trims``: times freed memory was handed back to the OS.

One process serves one root, so the counters are process-wide.
"""

from __future__ import annotations

import threading

PREFIX = ":tfx_servables:"
_HELP = {
    "serving_root_scan_errors": "Listings of the serving root that failed (state kept).",
    "connections_refused": "Connections refused with 503 at the connection limit.",
    "connection_timeouts": "Connections closed because a request did not arrive in time.",
    "memory_trims": "Times freed heap memory was returned to the OS after large requests.",
}
_lock = threading.Lock()
_counts: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}


def count(name: str, **labels: str) -> None:
    """Adds one to counter ``name`` (one of the module doc's) with ``labels``."""
    if name not in _HELP:
        raise ValueError(f"unknown event counter {name!r}")
    key = (name, tuple(sorted(labels.items())))
    with _lock:
        _counts[key] = _counts.get(key, 0) + 1


def value(name: str, **labels: str) -> int:
    """The current value of a counter (0 if it never counted)."""
    with _lock:
        return _counts.get((name, tuple(sorted(labels.items()))), 0)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render() -> str:
    """The exposition text of every counter that has counted."""
    with _lock:
        items = sorted(_counts.items())
    lines: list[str] = []
    for name in sorted({name for (name, _), _n in items}):
        lines += [f"# HELP {PREFIX}{name} {_HELP[name]}", f"# TYPE {PREFIX}{name} counter"]
        for (counted, labels), n in items:
            if counted == name:
                text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                lines.append(f"{PREFIX}{name}{{{text}}} {n}" if text else f"{PREFIX}{name} {n}")
    return "\n".join(lines) + "\n" if lines else ""
