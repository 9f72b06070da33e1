"""The root of every error the detector raises on purpose, and its two branches an operator acts on.

`ConfigurationError`: what was configured cannot work (a bad policy, store URL, list file, a missing or
weak hash key or secret); fix the setting and start again. `UnavailableError`: something the detector
needs (a store, the send ledger, a Kafka broker) did not answer; trying again later may work, so it is
`retriable`, as in aiokafka's errors. Callers catch `DetectorError` once instead of a list of classes.
"""

from __future__ import annotations


class DetectorError(Exception):
    """Raised on purpose by the detector; the message says what went wrong and, where it can, what to do."""

    retriable: bool = False


class ConfigurationError(DetectorError):
    """A setting, file or secret that cannot work as given; the message names it."""


class UnavailableError(DetectorError):
    """A server the detector needs did not answer in time, or refused the call."""

    retriable = True
