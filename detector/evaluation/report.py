"""The evaluation report as one offline HTML file: inline CSS and SVG, a few lines of inline script, nothing
fetched. Charts are drawn here, in Python, from what `detector.evaluation.evaluate` returns (so the JSON of an
evaluation is enough to draw it again); the script only checks, in the browser, that they were laid out
and marks each chart with `data-rendered` (what the browser test reads).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from detector.evaluation.result import (
    NO_OUTCOMES,
    Containment,
    Evaluation,
    Outcomes,
    Ranked,
    ScenarioOutcomes,
    Target,
)

ACTION_COLORS = {"allow": "#c9d3dd", "delay": "#8ecae6", "challenge": "#f0a202", "block": "#d62839"}
LEGIT_COLORS = ("#1f4e79", "#5fa8d3", "#2a9d8f", "#9ad1e8", "#90be6d", "#577590")
ATTACK_COLORS = ("#d62839", "#f77f00", "#9d4edd", "#e36414", "#b5179e", "#6a040f", "#fb8b24")
OTHER_COLOR = "#8d99ae"
STOPPED_COLOR = "#2a9d8f"
LET_THROUGH_COLOR = "#d62839"
PASSED_COLOR = "#f0a202"

_CSS = """
:root { --ink:#1d2733; --muted:#5c6b7a; --line:#e3e8ee; --bg:#f6f8fa; --card:#ffffff; }
* { box-sizing: border-box; }
body { margin:0; color:var(--ink); background:var(--bg);
       font:14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { background:#16425b; color:#fff; padding:20px 32px 18px; }
header h1 { margin:0 0 4px; font-size:22px; font-weight:650; letter-spacing:.2px; }
header p { margin:0; color:#cfe3ef; font-size:13px; }
main { max-width:1240px; margin:0 auto; padding:22px 32px 40px; }
.kpis { display:grid; grid-template-columns:repeat(auto-fit, minmax(210px, 1fr)); gap:14px;
        margin-bottom:18px; }
.kpi { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:14px 16px; }
.kpi .v { font-size:26px; font-weight:700; }
.kpi .l { color:var(--muted); font-size:12.5px; }
.kpi .t { font-size:12px; margin-top:4px; }
.ok { color:#1b7f4b; } .miss { color:#c1121f; }
.card { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:16px 18px;
        margin-bottom:18px; }
.card h2 { margin:0 0 2px; font-size:16px; }
.card .sub { color:var(--muted); font-size:12.5px; margin:0 0 10px; }
.row { display:grid; grid-template-columns:1fr 1fr; gap:18px; }
@media (max-width: 900px) { .row { grid-template-columns:1fr; } }
svg { display:block; width:100%; height:auto; }
svg text { font-family:inherit; fill:#33414f; }
.legend { display:flex; flex-wrap:wrap; gap:6px 14px; font-size:12px; color:var(--muted); margin:6px 0 0; }
.legend i { display:inline-block; width:11px; height:11px; border-radius:2px; margin-right:5px;
            vertical-align:-1px; }
table { border-collapse:collapse; width:100%; font-size:12.5px; }
th, td { padding:5px 8px; border-bottom:1px solid var(--line); text-align:right; white-space:nowrap; }
td.wrap { white-space:normal; min-width:220px; color:var(--muted); }
.scroll { overflow-x:auto; }
th { color:var(--muted); font-weight:600; background:#fbfcfd; }
td:first-child, th:first-child, td.l, th.l { text-align:left; }
tr.attack td:first-child { border-left:3px solid #d62839; }
tr.legit td:first-child { border-left:3px solid #3a7ca5; }
tr.total td { font-weight:650; background:#fbfcfd; }
.note { color:var(--muted); font-size:12px; }
.total-line { margin:12px 0 0; font-size:13px; }
code { background:#eef2f6; padding:1px 4px; border-radius:3px; }
"""

# Marks each chart once the browser has laid it out: the number of marks with a real, non-zero box.
_SCRIPT = """
(function () {
  function mark() {
    var charts = document.querySelectorAll("svg.chart"), total = 0;
    for (var i = 0; i < charts.length; i++) {
      var marks = charts[i].querySelectorAll(".mark"), drawn = 0;
      for (var j = 0; j < marks.length; j++) {
        var box = marks[j].getBBox();
        if (box.width > 0 && box.height > 0) { drawn++; }
      }
      charts[i].setAttribute("data-rendered", String(drawn));
      total += drawn;
    }
    document.body.setAttribute("data-rendered", String(total));
    document.body.setAttribute("data-charts", String(charts.length));
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", mark);
  } else {
    mark();
  }
})();
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _money(value: float) -> str:
    return f"${value:,.2f}" if abs(value) < 10_000 else f"${value:,.0f}"


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    exponent = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exponent:
            return step * exponent
    return 10 * exponent


def duration_text(seconds: float) -> str:
    """12 s, 8 min 20 s, 6 h 57 min."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, rest = divmod(round(seconds) // 60, 60)
    return f"{hours} h {rest} min" if rest else f"{hours} h"


def _hour_label(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M")


def scenario_colors(scenarios: Mapping[str, ScenarioOutcomes]) -> dict[str, str]:
    colors: dict[str, str] = {}
    legit = attack = 0
    for name, row in scenarios.items():
        if row.label == "legit":
            colors[name] = LEGIT_COLORS[legit % len(LEGIT_COLORS)]
            legit += 1
        elif row.label == "attack":
            colors[name] = ATTACK_COLORS[attack % len(ATTACK_COLORS)]
            attack += 1
        else:
            colors[name] = OTHER_COLOR
    return colors


def _legend(items: Sequence[tuple[str, str]]) -> str:
    return (
        '<div class="legend">'
        + "".join(f'<span><i style="background:{color}"></i>{_e(name)}</span>' for name, color in items)
        + "</div>"
    )


def _time_axis(x0: float, width: float, y: float, buckets: int, bucket_seconds: float, start: float) -> str:
    parts = [f'<line x1="{x0}" y1="{y}" x2="{x0 + width}" y2="{y}" stroke="#b8c2cc"/>']
    if buckets <= 0:
        return "".join(parts)
    span = buckets * bucket_seconds
    step = 3600.0 * max(1, round(span / 3600.0 / 8))
    first = math.ceil(start / step) * step
    tick = first
    while tick <= start + span:
        x = x0 + (tick - start) / span * width
        parts.append(
            f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + 4}" stroke="#b8c2cc"/>'
            f'<text x="{x:.1f}" y="{y + 16}" font-size="11" text-anchor="middle">{_hour_label(tick)}</text>'
        )
        tick += step
    return "".join(parts)


def _count(data: Mapping[str, list[int]], action: str, bucket: int) -> int:
    """Requests of `action` in a bucket (an evaluation written before the delay action has none)."""
    counts = data.get(action)
    return counts[bucket] if counts is not None and bucket < len(counts) else 0


def containment_table(found: Containment | None) -> str:
    """Quarantines by kind (opened, per level of the TTL ladder, requests blocked, known-good let past) and
    the spend breaker's trips per destination country and hour."""
    if found is None:
        return '<p class="sub">No containment figures in this evaluation.</p>'
    head = (
        "<tr><th>quarantine kind</th><th>opened</th><th>by level (1st, 2nd, ... offence)</th>"
        "<th>requests blocked</th><th>known-good let past</th></tr>"
    )
    rows = [
        f"<tr><td>{_e(kind)}</td><td>{entry.opened:,}</td>"
        f"<td>{_e(', '.join(f'level {lvl}: {n:,}' for lvl, n in entry.by_level.items()) or '-')}</td>"
        f"<td>{entry.blocked:,}</td><td>{entry.exempt:,}</td></tr>"
        for kind, entry in found.quarantines.items()
    ]
    rows.append(
        f"<tr><td><b>all</b></td><td><b>{found.quarantines_opened:,}</b></td><td></td>"
        f"<td><b>{found.quarantine_blocked:,}</b></td><td><b>{found.quarantine_exempt:,}</b></td></tr>"
    )
    quarantines = f'<div class="scroll"><table id="quarantines">{head}{"".join(rows)}</table></div>'
    trip_head = "<tr><th>country</th><th>hour (UTC)</th><th>requests blocked</th><th>cost blocked</th></tr>"
    trip_rows = [
        f"<tr><td>{_e(trip.country)}</td><td>{_e(trip.hour)}</td><td>{trip.blocked:,}</td>"
        f"<td>{_money(trip.cost)}</td></tr>"
        for trip in found.breaker_trips
    ]
    trip_rows.append(
        f"<tr><td><b>{len(found.breaker_trips):,} trips</b></td><td></td>"
        f"<td><b>{found.breaker_blocked:,}</b></td><td><b>{_money(found.breaker_cost)}</b></td></tr>"
    )
    breaker = f'<div class="scroll"><table id="breaker">{trip_head}{"".join(trip_rows)}</table></div>'
    return (
        quarantines + '<p class="sub">Spend circuit breaker, per destination country and hour:</p>' + breaker
    )


def traffic_chart(report: Evaluation, colors: Mapping[str, str]) -> str:
    """Requests per time bucket, stacked by scenario (legitimate below, attacks on top)."""
    timeline = report.timeline
    buckets = timeline.buckets
    series = timeline.series
    width, height, left, top, bottom = 1160.0, 260.0, 48.0, 10.0, 26.0
    plot_w, plot_h = width - left - 8, height - top - bottom
    totals = [
        sum(sum(_count(series[name], a, b) for a in ACTION_COLORS) for name in series) for b in range(buckets)
    ]
    y_max = _nice_max(max(totals, default=0))
    parts = [
        f'<svg class="chart" id="traffic" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        f'aria-label="Requests over time by scenario">'
    ]
    for i in range(5):
        value = y_max * i / 4
        y = top + plot_h - plot_h * i / 4
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - 8}" y2="{y:.1f}" stroke="#eef1f4"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{value:,.0f}</text>'
        )
    bar_w = plot_w / max(buckets, 1)
    start = report.start_ts or 0.0
    for b in range(buckets):
        y = top + plot_h
        x = left + b * bar_w
        for name in series:
            count = sum(_count(series[name], a, b) for a in ACTION_COLORS)
            if not count:
                continue
            h = plot_h * count / y_max
            y -= h
            when = _hour_label(start + b * timeline.bucket_seconds)
            parts.append(
                f'<rect class="mark" x="{x + 0.5:.1f}" y="{y:.2f}" width="{max(bar_w - 1, 0.8):.2f}" '
                f'height="{h:.2f}" fill="{colors[name]}"><title>{_e(name)} {when}: {count:,} requests'
                f"</title></rect>"
            )
    parts.append(_time_axis(left, plot_w, top + plot_h, buckets, timeline.bucket_seconds, start))
    parts.append("</svg>")
    return "".join(parts) + _legend([(name, colors[name]) for name in series])


def decisions_chart(report: Evaluation) -> str:
    """One row per scenario: allowed / challenged / blocked per time bucket, each row on its own scale."""
    timeline = report.timeline
    buckets = timeline.buckets
    series = timeline.series
    scenarios = report.scenarios
    row_h, gap, label_w, width = 44.0, 10.0, 250.0, 1160.0
    plot_w = width - label_w - 8
    height = len(series) * (row_h + gap) + 24
    bar_w = plot_w / max(buckets, 1)
    start = report.start_ts or 0.0
    parts = [
        f'<svg class="chart" id="decisions" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        f'aria-label="Decisions over time by scenario">'
    ]
    for index, name in enumerate(series):
        top = index * (row_h + gap)
        data = series[name]
        peak = max((sum(_count(data, a, b) for a in ACTION_COLORS) for b in range(buckets)), default=0)
        row = scenarios[name]
        label = row.label or ""
        mark = "#d62839" if label == "attack" else "#3a7ca5" if label == "legit" else OTHER_COLOR
        stopped = row.stopped_pct
        parts.append(
            f'<rect x="0" y="{top + 4}" width="3" height="{row_h - 8}" fill="{mark}"/>'
            f'<text x="10" y="{top + 18}" font-size="12.5" font-weight="600">{_e(name)}</text>'
            f'<text x="10" y="{top + 34}" font-size="11" fill="#5c6b7a">{row.requests:,} requests'
            f" · {stopped:.1f}% stopped<title>highest bar: {peak:,} requests</title></text>"
        )
        parts.append(
            f'<line x1="{label_w}" y1="{top + row_h}" x2="{width - 8}" y2="{top + row_h}" stroke="#e3e8ee"/>'
        )
        if peak == 0:
            continue
        for b in range(buckets):
            y = top + row_h
            x = label_w + b * bar_w
            for action in ACTION_COLORS:
                count = _count(data, action, b)
                if not count:
                    continue
                h = (row_h - 4) * count / peak
                y -= h
                when = _hour_label(start + b * timeline.bucket_seconds)
                parts.append(
                    f'<rect class="mark" x="{x + 0.4:.1f}" y="{y:.2f}" width="{max(bar_w - 0.8, 0.8):.2f}" '
                    f'height="{h:.2f}" fill="{ACTION_COLORS[action]}"><title>{_e(name)} {when}: '
                    f"{count:,} {action}</title></rect>"
                )
    parts.append(_time_axis(label_w, plot_w, height - 22, buckets, timeline.bucket_seconds, start))
    parts.append("</svg>")
    return "".join(parts) + _legend([(a, c) for a, c in ACTION_COLORS.items()])


def score_chart(report: Evaluation) -> str:
    """Share of each label's requests per score bin, with the challenge and block thresholds."""
    bins, step, by_label = report.scores.bins, report.scores.bin, report.scores.by_label
    order = [label for label in ("legit", "attack", "unlabelled") if label in by_label]
    colors = {"legit": "#3a7ca5", "attack": "#d62839", "unlabelled": OTHER_COLOR}
    shares = {label: [100.0 * c / max(sum(by_label[label]), 1) for c in by_label[label]] for label in order}
    width, height, left, top, bottom = 560.0, 250.0, 40.0, 12.0, 34.0
    plot_w, plot_h = width - left - 10, height - top - bottom
    y_max = 100.0
    parts = [
        f'<svg class="chart" id="scores" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        f'aria-label="Score distribution by label">'
    ]
    for i in range(5):
        y = top + plot_h - plot_h * i / 4
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" stroke="#eef1f4"/>'
            f'<text x="{left - 5}" y="{y + 4:.1f}" font-size="10.5" text-anchor="end">{25 * i}%</text>'
        )
    group_w = plot_w / bins
    bar_w = (group_w - 3) / max(len(order), 1)
    for b in range(bins):
        for k, label in enumerate(order):
            share = shares[label][b]
            if share <= 0:
                continue
            h = max(plot_h * share / y_max, 1.0)
            x = left + b * group_w + 1.5 + k * bar_w
            upper = f"{(b + 1) * step:g}" if b < bins - 1 else "+"
            parts.append(
                f'<rect class="mark" x="{x:.1f}" y="{top + plot_h - h:.2f}" width="{bar_w:.2f}" '
                f'height="{h:.2f}" '
                f'fill="{colors[label]}"><title>{label}, score {b * step:g}–{upper}: {share:.2f}% '
                f"({by_label[label][b]:,} requests)</title></rect>"
            )
    for b in range(0, bins, 2):
        x = left + b * group_w
        parts.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 14}" font-size="10.5" text-anchor="middle">'
            f"{b * step:g}</text>"
        )
    parts.append(
        f'<text x="{left + plot_w:.1f}" y="{top + plot_h + 14}" font-size="10.5" text-anchor="end">'
        f"{bins * step - step:g}+</text>"
    )
    for name, value, color in (
        ("delay", report.delay_at, ACTION_COLORS["delay"]),
        ("challenge", report.challenge_at, ACTION_COLORS["challenge"]),
        ("block", report.block_at, ACTION_COLORS["block"]),
    ):
        if value is None:
            continue
        x = left + min(float(value) / step, bins) * group_w
        parts.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="{color}" '
            f'stroke-dasharray="4 3" stroke-width="1.5"/>'
            f'<text x="{x + 3:.1f}" y="{top + 10}" font-size="10.5" fill="{color}">{name} {value:g}</text>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" font-size="11" text-anchor="middle" '
        f'fill="#5c6b7a">risk score</text></svg>'
    )
    return "".join(parts) + _legend([(label, colors[label]) for label in order])


def hbar_chart(
    chart_id: str,
    rows: Sequence[tuple[str, Sequence[tuple[float, str, str]], str]],
    *,
    label_w: float = 210.0,
    end_w: float = 110.0,
) -> str:
    """Horizontal bars: (label, segments of (value, color, tooltip), text at the end) per row."""
    width, row_h = 560.0, 22.0
    height = max(len(rows), 1) * row_h + 6
    total_max = max((sum(v for v, _, _ in segments) for _, segments, _ in rows), default=0.0) or 1.0
    plot_w = width - label_w - end_w
    parts = [f'<svg class="chart" id="{_e(chart_id)}" viewBox="0 0 {width:.0f} {height:.0f}" role="img">']
    if not rows:
        parts.append('<text x="8" y="18" font-size="12" fill="#5c6b7a">nothing to show</text>')
    for index, (label, segments, end_text) in enumerate(rows):
        y = index * row_h + 3
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 14}" font-size="11.5" text-anchor="end">{_e(label)}</text>'
        )
        x = label_w
        for value, color, tip in segments:
            if value <= 0:
                continue
            w = max(plot_w * value / total_max, 1.0)
            parts.append(
                f'<rect class="mark" x="{x:.1f}" y="{y + 2}" width="{w:.2f}" height="{row_h - 7}" '
                f'fill="{color}" rx="2"><title>{_e(tip)}</title></rect>'
            )
            x += w
        parts.append(
            f'<text x="{x + 6:.1f}" y="{y + 14}" font-size="11" fill="#5c6b7a">{_e(end_text)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def reasons_chart(report: Evaluation) -> str:
    labels = report.labels
    if labels:
        attack = labels.get("attack", NO_OUTCOMES).stopping_reasons
        legit = labels.get("legit", NO_OUTCOMES).stopping_reasons
        codes = sorted(set(attack) | set(legit), key=lambda c: -(attack.get(c, 0) + legit.get(c, 0)))[:12]
        rows = [
            (
                code,
                [
                    (
                        float(attack.get(code, 0)),
                        "#d62839",
                        f"{code}: {attack.get(code, 0):,} attack requests",
                    ),
                    (
                        float(legit.get(code, 0)),
                        "#3a7ca5",
                        f"{code}: {legit.get(code, 0):,} legitimate requests",
                    ),
                ],
                f"{attack.get(code, 0):,} / {legit.get(code, 0):,}",
            )
            for code in codes
        ]
        chart = hbar_chart("reasons", rows, label_w=240.0)
        return chart + _legend([("attack requests", "#d62839"), ("legitimate requests", "#3a7ca5")])
    stopping = report.overall.stopping_reasons
    rows = [
        (code, [(float(n), OTHER_COLOR, f"{code}: {n:,}")], f"{n:,}")
        for code, n in list(stopping.items())[:12]
    ]
    return hbar_chart("reasons", rows, label_w=240.0)


def top_list_chart(chart_id: str, entries: Sequence[Ranked], color: str) -> str:
    rows = [
        (
            e.key,
            [(float(e.requests), color, f"{e.key}: {e.requests:,} blocked, {_money(e.cost)}")],
            f"{e.requests:,} · {_money(e.cost)}",
        )
        for e in entries[:10]
    ]
    return hbar_chart(chart_id, rows, label_w=230.0)


def money_chart(report: Evaluation) -> str:
    """SMS cost of each attack: stopped against let through, and, with challenges followed to their end,
    the part of the stopped cost that a passed challenge sent after all."""
    rows = []
    for name, row in report.scenarios.items():
        if row.label != "attack":
            continue
        done = row.follow_through
        after = max(done.cost_sent - row.cost_let_through, 0.0) if done is not None else 0.0
        end = f"{_money(row.cost_stopped)} of {_money(row.cost_total)}"
        if done is not None:
            end = f"{_money(done.cost_sent)} leaked of {_money(row.cost_total)}"
        rows.append(
            (
                name,
                [
                    (
                        row.cost_stopped - after,
                        STOPPED_COLOR,
                        f"{name}: {_money(row.cost_stopped - after)} stopped for good",
                    ),
                    (after, PASSED_COLOR, f"{name}: {_money(after)} sent after a passed challenge"),
                    (
                        row.cost_let_through,
                        LET_THROUGH_COLOR,
                        f"{name}: {_money(row.cost_let_through)} let through",
                    ),
                ],
                end,
            )
        )
    if not rows:  # unlabelled: what the would-be-blocked requests cost, by country
        for entry in report.verdicts.would_block_by_country[:10]:
            rows.append(
                (
                    entry.key,
                    [(entry.cost, STOPPED_COLOR, f"{entry.key}: {_money(entry.cost)}")],
                    _money(entry.cost),
                )
            )
    chart = hbar_chart("money", rows, label_w=150.0, end_w=170.0)
    keys = [("stopped (blocked, or challenged and not passed)", STOPPED_COLOR)]
    if report.closed_loop is not None:
        keys.append(("sent after a passed challenge", PASSED_COLOR))
    legend = _legend([*keys, ("let through", LET_THROUGH_COLOR)])
    attack = report.labels.get("attack")
    total = ""
    if attack:
        total = (
            f'<p class="total-line"><b>{_money(attack.cost_stopped)}</b> of '
            f"{_money(attack.cost_total)} attack SMS cost stopped at the first decision "
            f"({attack.cost_stopped_pct:.1f}%); <b>{_money(attack.cost_let_through)}</b> let through."
        )
        done = attack.follow_through
        if done is not None:
            total += (
                f" Followed to the end: <b>{done.sms_sent:,}</b> attack SMS sent, "
                f"<b>{_money(done.cost_sent)}</b> leaked ({done.cost_sent_pct:.1f}%)."
            )
        total += "</p>"
    return chart + legend + total


def _kpis(report: Evaluation, shadow: Evaluation | None) -> str:
    cards: list[str] = []
    targets, labels = report.targets, report.labels

    def card(value: str, label: str, target: Target | None = None) -> None:
        extra = ""
        if target is not None:
            css = "ok" if target.met else "miss"
            verdict = "met" if target.met else "missed"
            extra = f'<div class="t {css}">target {_e(target.target)}% · {verdict}</div>'
        cards.append(
            f'<div class="kpi"><div class="v">{_e(value)}</div><div class="l">{_e(label)}</div>{extra}</div>'
        )

    if labels and targets:
        attack, legit = labels.get("attack", NO_OUTCOMES), labels.get("legit", NO_OUTCOMES)
        card(
            f"{attack.stopped_pct:.1f}%",
            f"of {attack.requests:,} attack requests blocked or challenged",
            targets["attack_stopped_pct"],
        )
        card(
            _money(attack.cost_stopped),
            f"attack SMS cost stopped, of {_money(attack.cost_total)} ({attack.cost_stopped_pct:.1f}%)",
            targets["attack_cost_stopped_pct"],
        )
        card(
            f"{legit.blocked_pct:.2f}%",
            f"of {legit.requests:,} legitimate requests blocked",
            targets["legit_blocked_pct"],
        )
        card(
            f"{legit.challenged_pct:.2f}%",
            "of legitimate requests challenged",
            targets["legit_challenged_pct"],
        )
        if attack.follow_through is not None:
            done = attack.follow_through
            card(
                f"{done.sms_sent:,} · {_money(done.cost_sent)}",
                f"attack SMS sent after all (at once, or after a passed challenge) and their cost: "
                f"{done.cost_sent_pct:.1f}% of the attack cost leaked",
            )
        if legit.follow_through is not None:
            done = legit.follow_through
            delay = done.challenge_delay_median_s
            added = f"; a passed challenge added {delay:.0f} s (median)" if delay is not None else ""
            card(
                f"{done.users_served_pct:.2f}%",
                f"of {done.users:,} legitimate users (sessions) got their code{added}",
            )
    else:
        verdicts = report.verdicts
        card(f"{verdicts.blocked:,}", f"of {verdicts.requests:,} requests would be blocked")
        card(f"{verdicts.challenged:,}", "would be challenged")
        card(_money(verdicts.cost_blocked), "cost of the requests that would be blocked")
    if shadow is not None:
        card(
            f"{shadow.verdicts.blocked:,} / {shadow.verdicts.challenged:,}",
            "shadow run: would block / challenge (nothing enforced)",
        )
    return '<div class="kpis">' + "".join(cards) + "</div>"


def _row(css: str, name: str, row: Outcomes, detect_text: str, last: str, *, legit: bool) -> str:
    cells = [
        f"{row.requests:,}",
        f"{row.blocked_pct:.2f}%",
        f"{row.challenged_pct:.2f}%",
        f"{row.allowed_pct:.2f}%",
        f"{row.delayed_pct:.2f}%",
        _money(row.cost_total),
        _money(row.cost_stopped),
        _money(row.cost_let_through),
    ]
    done = row.follow_through
    if done is not None:
        delay = done.challenge_delay_median_s
        cells += [
            f"{done.challenges_sent:,} / {done.challenged:,}",
            f"{done.sms_sent:,} ({done.sms_sent_pct:.1f}%)",
            _money(done.cost_sent),
            f"{done.users_served_pct:.2f}%" if legit else "",
            "" if delay is None else f"{delay:.0f} s",
        ]
    cells.append(detect_text)
    tds = "".join(f"<td>{_e(cell)}</td>" for cell in cells)
    return f'<tr class="{_e(css)}"><td>{_e(name)}</td>{tds}{last}</tr>'


def _scenario_table(report: Evaluation) -> str:
    follow = ""
    if report.closed_loop is not None:
        follow = (
            "<th>challenges<br>passed</th><th>SMS sent</th><th>cost sent<br>(attack: leaked)</th>"
            "<th>users who<br>got a code</th><th>delay added<br>(median)</th>"
        )
    head = (
        "<tr><th>scenario</th><th>requests</th><th>blocked</th><th>challenged</th><th>allowed</th>"
        "<th>delayed<br>first</th><th>cost</th><th>stopped</th><th>let through</th>"
        f"{follow}<th>allowed before<br>1st block</th>"
        '<th class="l">top reasons on stopped requests</th></tr>'
    )
    body = []
    for name, row in report.scenarios.items():
        detect = row.time_to_detect
        label = row.label or ""
        detect_text = ""
        if label == "attack":
            took = duration_text(detect.seconds_to_first_block or 0.0)
            detect_text = (
                f"{detect.allowed_before_first_block:,} ({took})" if detect.blocked_ever else "never blocked"
            )
        reasons = ", ".join(list(row.stopping_reasons)[:3])
        cell = f'<td class="l wrap">{_e(reasons)}</td>'
        body.append(_row(label, name, row, detect_text, cell, legit=label == "legit"))
    for label, total in report.labels.items():
        body.append(_row("total", f"all {label}", total, "", "<td></td>", legit=label == "legit"))
    return f'<div class="scroll"><table>{head}{"".join(body)}</table></div>'


def _follow_note(report: Evaluation) -> str:
    loop = report.closed_loop
    if loop is None:
        return ""
    return (
        f" Every challenge was then followed to its end: people passed {100 * loop.legit_pass_rate:.0f}% "
        f"after {loop.legit_delay_s:g} s (median), bots none, a scenario marked so its own share; "
        f"{loop.answers:,} answers went back into the engine. SMS sent = allowed at once, or allowed "
        "after a passed challenge; a user is a session (one person asking for one code)."
    )


def _card(title: str, sub: str, body: str) -> str:
    """A titled card; `sub` may hold markup (callers escape what they take from data)."""
    return f'<div class="card"><h2>{_e(title)}</h2><p class="sub">{sub}</p>{body}</div>'


def _pair(left: str, right: str) -> str:
    return f'<div class="row">{left}{right}</div>'


def render_html(
    report: Evaluation,
    *,
    shadow: Evaluation | None = None,
    title: str = "SMS pumping detector — evaluation",
) -> str:
    """The whole report page for an evaluation (and optionally the same traffic's shadow-mode run)."""
    colors = scenario_colors(report.scenarios)
    start, end = report.start_ts, report.end_ts
    span = ""
    if start is not None and end is not None:
        span = (
            f"{datetime.fromtimestamp(start, UTC):%Y-%m-%d %H:%M} – "
            f"{datetime.fromtimestamp(end, UTC):%Y-%m-%d %H:%M} UTC · "
        )
    basis = "the enforced action" if report.basis == "action" else "the verdict (shadow mode)"
    subtitle = (
        f"{_e(report.source or '')} · policy {_e(report.policy_version)} in "
        f"{_e(report.mode)} mode · {span}{report.requests:,} requests · outcome = {basis}"
    )
    every = f"{report.timeline.bucket_seconds / 60:g} minutes"
    blocked = report.blocked
    prices = "<code>detector/prices.csv</code>"
    sections = [
        _kpis(report, shadow),
        _card(
            "Traffic over time, by scenario",
            f"Requests per {every}; legitimate scenarios in blues and greens, attacks in warm colours.",
            traffic_chart(report, colors),
        ),
        _card(
            "Decisions over time, per scenario",
            f"Allowed, delayed, challenged and blocked requests per {every}; each row has its own scale.",
            decisions_chart(report),
        ),
        _pair(
            _card(
                "Money",
                "SMS cost of each attack: stopped (blocked or challenged) against let through, and the "
                f"stopped cost a passed challenge sent after all. Prices are assumptions; see {prices}.",
                money_chart(report),
            ),
            _card(
                "Score distribution",
                "Share of each label's requests per risk-score band, with the policy's thresholds.",
                score_chart(report),
            ),
        ),
        _pair(
            _card(
                "Top reasons",
                "Reasons on blocked or challenged requests (a request usually has several).",
                reasons_chart(report),
            ),
            _card(
                "Top blocked number prefixes",
                "Blocked requests and their cost, by number block.",
                top_list_chart("prefixes", blocked.get("prefix", []), "#9d4edd"),
            ),
        ),
        _pair(
            _card(
                "Top blocked client addresses",
                "Blocked requests and their cost, by client IP.",
                top_list_chart("ips", blocked.get("ip", []), "#f77f00"),
            ),
            _card(
                "Top blocked destination countries",
                "Blocked requests and their cost, by the number's country.",
                top_list_chart("countries", blocked.get("country", []), "#e36414"),
            ),
        ),
        _card(
            "Quarantines and the spend circuit breaker",
            "Read from the decisions' reasons: quarantines begun (<code>quarantine_started</code>) per kind "
            "and level of their TTL ladder, requests they blocked (<code>quarantined</code>) and known-good "
            "numbers they let past (<code>quarantine_exempt</code>); the breaker's blocks "
            "(<code>spend_circuit_breaker</code>) per country and hour.",
            containment_table(report.containment),
        ),
        _card(
            "Per scenario",
            'Stopped = blocked or challenged at the first decision. "Delayed first": delayed, then '
            "counted by its retry's decision (a delay never retried counts as stopped, not blocked). "
            '"Allowed before 1st block": attack '
            "requests let through before the scenario's first block, and how long it took."
            + _follow_note(report),
            _scenario_table(report),
        ),
        '<p class="note">Generated by <code>detector evaluate</code>. One offline file: no scripts or styles '
        f"are fetched. Costs use the price table in {prices}, whose every row is an assumption.</p>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_e(title)}</h1><p>{subtitle}</p></header><main>{''.join(sections)}</main>"
        f"<script>{_SCRIPT}</script></body></html>\n"
    )


def write_html(report: Evaluation, path: str | Path, *, shadow: Evaluation | None = None) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_html(report, shadow=shadow), encoding="utf-8")
    return target
