"""Broker lists as operators write them: ``host:9092,kafka://other:9092`` (commas or semicolons)."""

from __future__ import annotations


def bootstrap_servers(brokers: str) -> list[str]:
    """aiokafka's form, HOST:PORT each; ValueError when the list is empty."""
    hosts = []
    for part in brokers.replace(";", ",").split(","):
        part = part.strip()
        if part:
            hosts.append(part.split("://", 1)[1] if "://" in part else part)
    if not hosts:
        raise ValueError("no Kafka brokers configured")
    return hosts


def broker_urls(brokers: str) -> list[str]:
    """Faust's form, kafka://HOST:PORT each."""
    return [f"kafka://{host}" for host in bootstrap_servers(brokers)]
