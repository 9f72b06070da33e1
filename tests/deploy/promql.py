"""PromQL expressions parsed with promql-parser (Prometheus' grammar): the metrics and labels they select."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import promql_parser

# Grafana's variables are not PromQL; any duration stands in for them.
_GRAFANA_DURATIONS = re.compile(r"\$__(rate_interval|interval|range)\b")
# Added to every series by Prometheus at scrape time, never by the exporter.
SCRAPE_LABELS = frozenset({"job", "instance", "__name__"})


def parse(expr: str) -> Any:
    return promql_parser.parse(_GRAFANA_DURATIONS.sub("5m", expr))


def _nodes(node: Any) -> Iterator[Any]:
    yield node
    for attr in ("lhs", "rhs", "expr", "param", "vector_selector", "args"):
        child = getattr(node, attr, None)
        for item in child if isinstance(child, list) else [child]:
            if item is not None and not isinstance(item, str | int | float):
                yield from _nodes(item)


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names its matchers use) of every series selector in `expr`."""
    found = []
    for node in _nodes(parse(expr)):
        if type(node).__name__ == "VectorSelector":
            labels = {m.name for m in node.matchers.matchers} - SCRAPE_LABELS
            found.append((node.name, labels))
    return found


def regex_matchers(expr: str, metric: str, label: str) -> list[str]:
    """The regular expressions `expr` matches `metric`'s `label` against (anchored at both ends)."""
    return [
        m.value
        for node in _nodes(parse(expr))
        if type(node).__name__ == "VectorSelector" and node.name == metric
        for m in node.matchers.matchers
        if m.name == label and m.op == promql_parser.MatchOp.Re
    ]


def metric_names(expr: str) -> set[str]:
    return {name for name, _ in selectors(expr)}
