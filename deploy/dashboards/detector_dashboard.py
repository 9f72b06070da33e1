"""The operations dashboard, built with grafana-foundation-sdk. `make dashboards` writes it to
sms-pumping-detector.json next to this file (Grafana provisioning reads that; never edit it by hand).

Every query names metrics the workers export on /metrics (tests/deploy/test_dashboard.py scrapes live
workers to check it), consumer lag from a Kafka exporter, or metrics of issues still open (listed there).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import bargauge, dashboard, stat, timeseries
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import BigValueColorMode, StackingMode, VizOrientation
from grafana_foundation_sdk.models.dashboard import DataSourceRef

OUTPUT = Path(__file__).with_name("sms-pumping-detector.json")
UID = "sms-pumping-detector"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
OURS = 'consumergroup=~"sms-pumping-.*"'  # the default group ids of both workers


def query(expr: str, legend: str = "", ref: str = "A") -> Dataquery:
    return Dataquery().expr(expr).legend_format(legend or "__auto").ref_id(ref).datasource(DATASOURCE)


def series(
    title: str, unit: str, *queries: Dataquery, stacked: bool = False, width: int = 12, description: str = ""
) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).unit(unit).datasource(DATASOURCE)
             .span(width).height(8).min(0).fill_opacity(10))  # fmt: skip
    if stacked:
        panel = panel.stacking(_stacked())
    for q in queries:
        panel = panel.with_target(q)
    return panel


def _stacked() -> Any:
    from grafana_foundation_sdk.builders.common import StackingConfig

    return StackingConfig().mode(StackingMode.NORMAL)


def quantiles(metric: str, by: str = "") -> list[Dataquery]:
    group = f"le{', ' + by if by else ''}"
    suffix = f" {{{{{by}}}}}" if by else ""
    buckets = f"sum by ({group}) (rate({metric}_bucket[{RATE}]))"
    return [
        query(f"histogram_quantile({q}, {buckets})", f"p{int(q * 100)}{suffix}", ref)
        for q, ref in ((0.5, "A"), (0.99, "B"))
    ]


def build() -> dashboard.Dashboard:
    rate = RATE
    board = (
        dashboard.Dashboard("SMS pumping detector")
        .uid(UID)
        .tags(["sms-pumping-detector"])
        .refresh("30s")
        .time("now-3h", "now")
        .timezone("browser")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_row(dashboard.Row("Decisions"))
        .with_panel(
            series(
                "Decisions by action and verdict",
                "reqps",
                query(
                    f"sum by (action, verdict) (rate(detector_decisions_total[{rate}]))",
                    "{{action}} / {{verdict}}",
                ),
                stacked=True,
                description="Decisions published per second (shadow mode decides but allows).",
            )
        )
        .with_panel(
            bargauge.Panel()
            .title("Top reasons")
            .description("Reasons given, over the dashboard's time range.")
            .datasource(DATASOURCE)
            .span(12)
            .height(8)
            .orientation(VizOrientation.HORIZONTAL)
            .unit("short")
            .with_target(
                query(
                    "topk(10, sum by (reason) (increase(detector_decision_reasons_total[$__range])))",
                    "{{reason}}",
                ).instant()
            )
        )
        .with_panel(
            series(
                "Events in",
                "reqps",
                query(f"sum by (type) (rate(detector_events_in_total[{rate}]))", "{{type}}"),
                stacked=True,
                description="Messages read per second, by event type (bad: unreadable).",
            )
        )
        .with_panel(
            series(
                "Consumer lag",
                "short",
                query(
                    f"sum by (consumergroup, topic) (kafka_consumergroup_lag{{{OURS}}})",
                    "{{consumergroup}} {{topic}}",
                ),
                description="Messages not yet read, per consumer group and topic (from the Kafka exporter).",
            )
        )
        .with_row(dashboard.Row("Latency"))
        .with_panel(
            series(
                "Batch latency",
                "s",
                *quantiles("detector_batch_seconds", "topic"),
                description="From taking a batch to all its output acknowledged by Kafka.",
            )
        )
        .with_panel(
            series(
                "Decision latency",
                "s",
                *quantiles("detector_decision_delay_seconds"),
                description="From the request's Kafka timestamp to its decision acknowledged.",
            )
        )
        .with_row(dashboard.Row("Faults"))
        .with_panel(
            series(
                "Store errors and degraded decisions",
                "ops",
                query(
                    f"sum by (operation) (rate(detector_store_errors_total[{rate}]))",
                    "store error: {{operation}}",
                ),
                query(f"sum(rate(detector_degraded_decisions_total[{rate}]))", "degraded decisions", "B"),
                query(f"sum(rate(detector_send_ledger_errors_total[{rate}]))", "send ledger errors", "C"),
                width=8,
            )
        )
        .with_panel(
            series(
                "Dead letters",
                "ops",
                query(f"sum by (topic) (rate(detector_dead_letters_total[{rate}]))", "worker: {{topic}}"),
                query(
                    f"sum by (topic) (rate(detector_send_invalid_input_total[{rate}]))",
                    "send worker: {{topic}}",
                    "B",
                ),
                width=8,
            )
        )
        .with_panel(
            series(
                "Feedback",
                "ops",
                query(f"sum by (status) (rate(detector_feedback_total[{rate}]))", "{{status}}"),
                query(
                    f"sum by (reason) (rate(detector_feedback_dropped_total[{rate}]))",
                    "dropped: {{reason}}",
                    "B",
                ),
                width=8,
            )
        )
        .with_row(dashboard.Row("Sending (8x8)"))
        .with_panel(
            series(
                "Send outcomes",
                "ops",
                query(f"sum by (status) (rate(detector_send_outcomes_total[{rate}]))", "{{status}}"),
                stacked=True,
                width=8,
            )
        )
        .with_panel(
            series(
                "8x8 errors and retries",
                "ops",
                query(
                    f'sum by (operation, result) (rate(detector_send_8x8_requests_total{{result!="ok"}}[{rate}]))',  # noqa: E501
                    "error: {{operation}} {{result}}",
                ),
                query(
                    f"sum by (reason) (rate(detector_send_retries_total[{rate}]))", "retry: {{reason}}", "B"
                ),
                query(
                    f"sum by (error) (rate(detector_send_failures_total[{rate}]))", "failed: {{error}}", "C"
                ),
                width=8,
            )
        )
        .with_panel(
            series("8x8 request latency", "s", *quantiles("detector_send_8x8_seconds", "operation"), width=8)
        )
        .with_panel(
            stat.Panel()
            .title("Sends in doubt")
            .description(
                "Claims found without an outcome (a worker died mid-send): not resent, "
                "reported failed/in_doubt."
            )
            .datasource(DATASOURCE)
            .span(6)
            .height(6)
            .color_mode(BigValueColorMode.BACKGROUND)
            .with_target(query("sum(increase(detector_send_in_doubt_total[$__range]))", "in doubt").instant())
        )
        .with_row(dashboard.Row("Attack"))
        .with_panel(
            series(
                "Quarantines",
                "short",
                query(f"sum by (kind) (increase(detector_quarantines_total[{rate}]))", "{{kind}}"),
                width=9,
                description="Prefixes, subnets and IPs quarantined after crossing the block line.",
            )
        )
        .with_panel(
            series(
                "Cost stopped",
                "currencyUSD",
                query(f"sum(rate(detector_cost_stopped_total[{rate}])) * 3600", "per hour"),
                width=9,
                description="Estimated SMS cost (price file) of requests blocked, challenged or delayed.",
            )
        )
    )
    return board


def render() -> str:
    built = build().build()
    for number, panel in enumerate(built.panels or [], start=1):  # stable ids: links and alerts refer to them
        panel.id_val = number
    # Through json once more, so the committed file is stable: sorted keys, two-space indent, a final newline.
    return json.dumps(json.loads(JSONEncoder().encode(built)), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    target = Path(argv[1]) if len(argv) > 1 else OUTPUT
    target.write_text(render())
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
