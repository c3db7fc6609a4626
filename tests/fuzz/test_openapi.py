"""Schemathesis against the service's own OpenAPI document (``make fuzz``; deselected from ``make test``).

Every operation, twice: anonymous, and with a real token. Cases come from the schema's examples, its coverage
cases (boundaries, missing and wrong-typed fields) and a bounded number of generated ones, positive and negative,
from a fixed seed. Each response must pass not_a_server_error, status_code_conformance, content_type_conformance,
response_schema_conformance and negative_data_rejection: the schema says what the service does, status by status.
"""

import pytest
from hypothesis import HealthCheck, settings
from schemathesis import Case

from tests.fuzz.scene import Fuzzer, Operation, fuzz_schema

pytestmark = pytest.mark.fuzz

schema = fuzz_schema()
# The fuzzer fixture is one per operation on purpose: its scene lives as long as that operation's cases.
per_operation_fixture = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


@schema.parametrize()
@per_operation_fixture
def test_anonymous(case: Case[Operation], anonymous: Fuzzer) -> None:
    anonymous.run(case)


@schema.parametrize()
@per_operation_fixture
def test_with_token(case: Case[Operation], with_token: Fuzzer) -> None:
    with_token.run(case)
