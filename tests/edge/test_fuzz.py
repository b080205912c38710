"""Schema fuzzing: every operation of the API, with generated input, never answers 5xx and
always answers in the shape its OpenAPI schema says (schemathesis against the live server).

Bounded for CI: a few derandomized examples per operation, no per-example deadline. The
operations that queue model work still get fuzzed; their examples mostly fail validation
(400) and the rare valid one only queues a job (no worker runs here).
"""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.support import make_user



def _schema():
    # drf-spectacular's document, built in-process at collection (it needs settings, not a database)
    from drf_spectacular.generators import SchemaGenerator

    document = SchemaGenerator().get_schema(request=None, public=True)
    loaded = schemathesis.openapi.from_dict(document)
    # The token operations would lock the fuzzing user out (login throttle) or replace its token.
    for method, path in (("POST", "/api/auth/token/"), ("POST", "/api/account/token/"),
                         ("POST", "/api/account/password/")):
        loaded = loaded.exclude(method=method, path=path)
    return loaded


schema = _schema()


@pytest.fixture()
def fuzz_headers(transactional_db):
    from accounts.services import account_token_get

    user = make_user("fuzzer")
    return {"Authorization": f"Token {account_token_get(user=user).key}"}


@schema.parametrize()
@settings(max_examples=3, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_api_never_answers_5xx_and_matches_its_schema(case, live_server, fuzz_headers):
    case.call_and_validate(base_url=live_server.url, headers=fuzz_headers,
                           checks=[not_a_server_error, response_schema_conformance])
