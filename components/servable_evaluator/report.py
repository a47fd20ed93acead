"""Markdown rendering of a ServableEvaluator report (see ``checks.evaluate``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_MAX_CELL = 160


def render_markdown(report: Mapping[str, Any]) -> str:
    """A short human-readable summary: verdict, reasons, signatures, checks, latency."""
    name = report.get("servable", "?")
    verdict = "BLESSED" if report.get("blessed") else "NOT BLESSED"
    lines = [f"# Servable `{name}`: {verdict}", ""]
    reasons = report.get("reasons") or []
    if reasons:
        lines.append("Rejected because:")
        lines.append("")
        lines.extend(f"- {_cell(r, 300)}" for r in reasons)
        lines.append("")
    signatures = report.get("signatures") or {}
    if signatures:
        lines += ["## Signatures", "",
                  "| signature | method | inputs | outputs | row | columnar |",
                  "|---|---|---|---|---|---|"]
        for key, sig in signatures.items():
            formats = sig.get("formats") or {}
            lines.append("| " + " | ".join([
                f"`{key}`", _cell(sig.get("method_name", "")),
                _cell(_tensors(sig.get("inputs") or {})), _cell(_tensors(sig.get("outputs") or {})),
                _format_cell(formats.get("row")), _format_cell(formats.get("columnar")),
            ]) + " |")
        lines.append("")
    checks = report.get("checks") or []
    if checks:
        lines += ["## Checks", "", "| | check | signature | example | detail |",
                  "|---|---|---|---|---|"]
        for check in checks:
            mark = "pass" if check.get("passed") else "**FAIL**"
            lines.append("| " + " | ".join([
                mark, _cell(check.get("name", "")), _cell(check.get("signature") or ""),
                _cell(check.get("example") or ""), _cell(check.get("detail", "")),
            ]) + " |")
        lines.append("")
    latency = report.get("latency_ms") or {}
    if latency:
        lines += ["## Latency (ms)", "", "| example | p50 | p99 | calls |", "|---|---|---|---|"]
        for example, stats in latency.items():
            lines.append(f"| {_cell(example)} | {stats.get('p50', 0):.3f} | "
                         f"{stats.get('p99', 0):.3f} | {stats.get('calls', 0)} |")
        lines.append("")
    return "\n".join(lines)


def _tensors(tensors: Mapping[str, Any]) -> str:
    parts = []
    for alias, info in tensors.items():
        shape = info.get("shape")
        shape_text = "?" if shape is None else "[" + ", ".join(
            "None" if d is None else str(d) for d in shape) + "]"
        parts.append(f"{alias}: {info.get('dtype')} {shape_text}")
    return "; ".join(parts)


def _format_cell(entry: Mapping[str, Any] | None) -> str:
    if not entry:
        return ""
    return ("yes" if entry.get("ok") else "no") + (
        f" ({_cell(entry.get('detail', ''), 80)})" if not entry.get("ok") else "")


def _cell(text: Any, limit: int = _MAX_CELL) -> str:
    value = " ".join(str(text).split()).replace("|", "\\|")
    return value if len(value) <= limit else value[: limit - 1] + "…"
