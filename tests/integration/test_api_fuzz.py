"""Property-based fuzzing of the served API with schemathesis: whatever the input, never a 5xx, and every answer
conforms to the committed schema (status codes, content types, bodies).

Bounded for CI: at most ``MAX_EXAMPLES`` examples per operation, derandomized (the same examples every run), so
the whole module takes well under a minute. The API runs as a real uvicorn process on a key and queue prefix of
its own (no worker: jobs it accepts stay queued).
"""

from __future__ import annotations

import json
import uuid

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings

from services.api.openapi import COMMITTED
from tests.support.api_server import start_api

TOKEN = f"fuzz-{uuid.uuid4().hex}"
MAX_EXAMPLES = 50


@pytest.fixture(scope="module")
def fuzz_api(service_env, tmp_path_factory):
    env = {**service_env,
           "IMGRESTORE_KEY_PREFIX": f"fuzz{uuid.uuid4().hex[:6]}:",
           "IMGRESTORE_QUEUE_PREFIX": f"f{uuid.uuid4().hex[:8]}.",
           "IMGRESTORE_API_TOKENS": json.dumps({TOKEN: {"name": "fuzz", "allow": ["s3://fuzz-bucket/"]}}),
           "IMGRESTORE_LOG_LEVEL": "WARNING",
           # The schema states a callback URL's syntax; where it may point (every resolved address public) is a rule
           # no pattern can express, so schema-valid hosts such as "0" are let through here: test_abuse covers egress.
           "IMGRESTORE_CALLBACK_ALLOWED_NETWORKS": "0.0.0.0/0,::/0"}
    server = start_api(env, tmp_path_factory.mktemp("fuzz-api"))
    yield server
    server.stop()
    # A 500 would also be logged by the server with its traceback: there must be none.
    assert '"level": "error"' not in server.log(), server.log()[-3000:]


# The committed schema is the served one (test_api_http checks that), so tests can be generated at collection time.
schema = schemathesis.openapi.from_path(COMMITTED)


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_api_never_fails_on_any_input(case, fuzz_api):
    case.call_and_validate(base_url=fuzz_api.url, headers={"Authorization": f"Bearer {TOKEN}"})
