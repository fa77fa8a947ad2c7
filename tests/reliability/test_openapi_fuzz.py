"""Schemathesis against the running gateway's OpenAPI: whatever the input, valid by the
document or not, no 5xx, and every answer's status code, content type and body are the ones
the document promises.

The cases come from each operation's Hypothesis strategy (schemathesis' pytest loader does not
support this pytest yet), so each operation is one test.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.system import System

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

# Every operation but the event stream, which never ends by design (the browser tests use it),
# with the kinds of input it can be given: an operation whose only input is a free-form path
# has no invalid input to generate.
BOTH = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
VALID_ONLY = (GenerationMode.POSITIVE,)
OPERATIONS = [
    ("POST", "/api/predictions", BOTH),
    ("POST", "/api/digits/{digit_id}/label", BOTH),
    ("GET", "/healthz", VALID_ONLY),
    ("GET", "/readyz", VALID_ONLY),
    ("GET", "/api/digits{rest}", VALID_ONLY),
    ("GET", "/api/models{rest}", VALID_ONLY),
    ("GET", "/api/rescore-jobs{rest}", VALID_ONLY),
]
CASES = [(method, path, mode) for method, path, modes in OPERATIONS for mode in modes]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="session")
def gateway_schema(system: System) -> schemathesis.BaseSchema:
    """The gateway's OpenAPI document as it serves it."""
    return schemathesis.openapi.from_url(f"{system.gateway_url}/openapi.json")


@pytest.mark.parametrize(
    ("method", "path", "mode"), CASES, ids=[f"{m} {p} {mode.value}" for m, p, mode in CASES]
)
def test_the_gateway_answers_every_input_as_documented(
    gateway_schema: schemathesis.BaseSchema, method: str, path: str, mode: GenerationMode
) -> None:
    operation = gateway_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    def answers_as_documented(case: schemathesis.Case[Any]) -> None:
        case.call_and_validate(checks=CHECKS, timeout=30)

    answers_as_documented()


# Inputs the history routes refuse, reached through the gateway as a browser would.
REFUSED_BY_HISTORY = [
    "/api/models/abc",
    "/api/models/99999999999999999999999",
    "/api/digits/not-a-uuid",
    "/api/digits/not-a-uuid/image",
    "/api/digits?limit=0",
    "/api/digits?limit=abc",
    "/api/digits?before=garbage",
    "/api/rescore-jobs/xyz",
    "/api/rescore-jobs?active=maybe",
    "/api/digits/%00%01",
    "/api/models/..%2F..%2Finternal%2Fdigit-ids",
]


@pytest.mark.parametrize("path", REFUSED_BY_HISTORY)
def test_history_refusals_reach_the_browser_as_documented_problems(
    system: System, path: str
) -> None:
    answer = httpx.get(f"{system.gateway_url}{path}", timeout=10)
    assert 400 <= answer.status_code < 500, (path, answer.status_code, answer.text)
    assert isinstance(answer.json()["detail"], str), answer.text
