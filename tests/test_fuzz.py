"""Schema-driven fuzzing of the HTTP API: schemathesis generates requests from the app's own
OpenAPI document (valid and invalid bodies, odd path and query values) against a real uvicorn
server; no request may get a 5xx.

The operations are driven through schemathesis' Python API and Hypothesis directly (its pytest
plugin does not load under this pytest version)."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings

from aigc.server import Settings

from helpers import LiveServer

EXAMPLES = 12


def test_no_request_gets_a_server_error(served_ws):
    with LiveServer(served_ws, Settings(max_tokens=16, default_max_tokens=8, max_batch=4, max_images=2,
                                        max_queue=64)) as server:
        schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
        seen, failures, statuses = [], [], []
        for result in schema.get_all_operations():
            operation = result.ok()
            seen.append(f"{operation.method.upper()} {operation.path}")

            @given(case=operation.as_strategy())
            @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def call(case):
                response = case.call(timeout=60)
                statuses.append(response.status_code)
                if response.status_code >= 500:
                    failures.append((case.method, case.formatted_path, case.body, case.query, response.text[:300]))

            call()
    assert {"POST /v1/completions", "POST /v1/chat/completions", "POST /v1/images/generations",
            "POST /api/generate", "POST /api/feedback", "GET /api/runs/{name}"} <= set(seen)
    assert not failures, failures[:5]
    assert len(statuses) >= 3 * len(seen) and any(400 <= s < 500 for s in statuses) and 200 in statuses
