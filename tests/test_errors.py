"""Every error the detector raises on purpose has one root, and the branch says what an operator does."""

import pytest

from detector.errors import ConfigurationError, DetectorError, UnavailableError
from detector.hashing import MissingHashKey
from detector.kafka.output import DeliveryFailed
from detector.kafka.topics import TopicError
from detector.policy import PolicyError
from detector.send.ledger import LedgerUnavailable
from detector.send.secrets import SecretError
from detector.state.base import StoreUnavailable
from detector.state.open import StoreUrlError


@pytest.mark.parametrize("error", [PolicyError, MissingHashKey, StoreUrlError, SecretError])
def test_configuration_errors_are_not_retriable(error: type[DetectorError]) -> None:
    assert issubclass(error, ConfigurationError) and not error.retriable


@pytest.mark.parametrize("error", [StoreUnavailable, LedgerUnavailable, TopicError, DeliveryFailed])
def test_unavailable_errors_are_retriable(error: type[DetectorError]) -> None:
    assert issubclass(error, UnavailableError) and error.retriable


def test_value_errors_stay_value_errors() -> None:
    """Callers that caught ValueError before the root existed still catch these."""
    assert issubclass(PolicyError, ValueError) and issubclass(StoreUrlError, ValueError)
