"""Schema-driven fuzzing of the HTTP API: schemathesis generates requests from the app's own
OpenAPI document (valid and invalid bodies, odd path values) against a real uvicorn server;
no request may get a 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from aigc.server import Settings

from helpers import LiveServer


@pytest.fixture(scope="module")
def fuzz_server(served_ws):
    with LiveServer(served_ws, Settings(max_tokens=16, default_max_tokens=8, max_batch=4, max_images=2,
                                        max_queue=64)) as server:
        yield server


@pytest.fixture(scope="module")
def api_schema(fuzz_server):
    return schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=12, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(case):
    case.call_and_validate(checks=[not_a_server_error], timeout=60)
