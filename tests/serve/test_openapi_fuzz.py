"""schemathesis against the service's own OpenAPI document: no input a client can send gets a 5xx.

Every operation of the document, with valid and invalid data (50 examples of each per operation, the same
ones every run), authenticated. Driven with `as_strategy` rather than schemathesis' pytest plugin, which
does not load under this pytest.
"""

from __future__ import annotations

import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.serve.conftest import TOKEN, ServeProcess

pytestmark = pytest.mark.redis


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_no_input_gets_a_server_error(server: ServeProcess, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/schema/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 5
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and operation.method.upper() == "GET":
            continue  # no parameters, no body: nothing to make invalid

        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis.settings(
            max_examples=50,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        def no_server_error(case: schemathesis.Case) -> None:
            case.call_and_validate(
                base_url=server.url, headers=headers, checks=[not_a_server_error], timeout=10
            )

        no_server_error()
