"""`detector`: the command line. Every option can also come from the environment (DETECTOR_*).

One module per command group (`replay`, `policy`, `sim`, `worker`, `send_worker`, `serve`, `quarantine`,
`prices`); options are declared with `options.option` (the ones both Kafka workers share:
`kafka_options.kafka_options`; the 8x8 account's: `vendor_options`), policies loaded with
`common.policy_for`. Errors the detector raises on purpose (`DetectorError`) end the command here, once, with
their message and no traceback.
"""

from __future__ import annotations

from typing import Any

import click

from detector import logs
from detector.cli.options import CONTEXT, option
from detector.errors import DetectorError


class DetectorGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DetectorError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=DetectorGroup, context_settings=CONTEXT)
@click.version_option(
    package_name="sms-pumping-detector", prog_name="detector", message="%(prog)s %(version)s"
)
@option(
    "--log-level",
    env="DETECTOR_LOG_LEVEL",
    default="INFO",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="",
)
@option(
    "--log-format",
    env="DETECTOR_LOG_FORMAT",
    default="text",
    type=click.Choice(["text", "json"]),
    help="json: one object per line.",
)
def main(log_level: str, log_format: str) -> None:
    """Detect SMS pumping before an OTP is sent: allow / delay / challenge / block, with the reasons.

    \b
    Try it:        detector simulate --out day.jsonl && detector replay day.jsonl
    Tune a policy: detector policy check my-policy.yaml && detector evaluate day.jsonl --policy my-policy.yaml
    Run it:        detector worker (Kafka + Redis) and detector send-worker (the only caller of 8x8)
    Ask over HTTP: detector serve (the same engine and store, synchronous answers)
    """
    logs.configure(log_level, log_format)


def _register() -> None:
    from detector.cli.policy import policy
    from detector.cli.prices import prices
    from detector.cli.quarantine import quarantine
    from detector.cli.replay import replay
    from detector.cli.send_worker import send_worker
    from detector.cli.serve import serve
    from detector.cli.sim import demo, evaluate, simulate
    from detector.cli.worker import worker

    for command in (replay, policy, simulate, evaluate, demo, worker, send_worker, serve, quarantine, prices):
        main.add_command(command)


_register()

__all__ = ["main"]
