"""Property-based fuzzing of the whole HTTP API from its OpenAPI schema (schemathesis).

For generated requests, valid and invalid alike: never a 5xx, and every response (status, content
type, body) is one the schema declares. Authenticated as one fuzz user against the real Temporal
server; no worker, so dispatched runs simply stay queued.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from kron.common.schedules import ScheduleSettings
from kron.gateway.app import create_app
from kron.gateway.settings import GatewaySettings
from kron.gateway.tokens import issue_token
from kron.scheduler.agent_registry import AgentRegistryWorkflow
from kron_testing.fake_composio import FakeComposio
from kron_testing.temporal_server import TemporalDevServer

from ..conftest import COMPOSIO_KEY
from .conftest import JWT_SECRET

FUZZ_USER = "fuzz-user"
EXAMPLES = 300  # all operations together: ~30 s on 2 cores
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def agent_registries(temporal_server: TemporalDevServer) -> Iterator[None]:
    """The scheduler's worker hosts the agent registries: without it /agents answers 503 (as it
    should when the scheduler is down), which the fuzz would rightly count as a server error."""
    stop = threading.Event()

    async def serve() -> None:
        client = await Client.connect(temporal_server.address, data_converter=pydantic_data_converter)
        queue = ScheduleSettings().scheduler_task_queue
        async with Worker(client, task_queue=queue, workflows=[AgentRegistryWorkflow]):
            while not stop.is_set():
                await asyncio.sleep(0.05)

    thread = threading.Thread(target=lambda: asyncio.run(serve()))
    thread.start()
    yield
    stop.set()
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def fuzz_app(temporal_server: TemporalDevServer, agent_registries: None) -> Iterator[FastAPI]:
    # schemathesis runs the app (and its lifespan) in its own event loop thread, so the app makes
    # its own Temporal client there instead of sharing the test loop's.
    with FakeComposio(api_key=COMPOSIO_KEY) as composio:
        yield create_app(
            GatewaySettings(
                jwt_secret=SecretStr(JWT_SECRET),
                token_endpoint_enabled=True,
                temporal_address=temporal_server.address,
                task_queue="fuzz-no-worker",
                composio_api_key=SecretStr(COMPOSIO_KEY),
                composio_base_url=composio.base_url,
                dispatch_rate_per_second=1000.0,
                dispatch_burst=1000,
                query_timeout_seconds=0.5,
            )
        )


def test_api_never_fails_and_matches_its_schema(fuzz_app: FastAPI) -> None:
    api = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    operations = [result.ok() for result in api.get_all_operations() if isinstance(result, Ok)]
    assert len(operations) == 31  # every route is in the schema, so every route is fuzzed
    # Valid and invalid requests for every operation, drawn together (the pytest plugin of this
    # schemathesis version does not run under pytest 9).
    cases = st.one_of(
        [op.as_strategy(generation_mode=mode) for op in operations for mode in GenerationMode]
    )
    token = issue_token(FUZZ_USER, fuzz_app.state.gateway.settings).access_token

    @given(case=cases)
    @settings(
        max_examples=EXAMPLES, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def check(case: schemathesis.Case[Any]) -> None:
        # A valid token; negative cases may still mangle the Authorization header (401s are fine).
        case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)

    check()
