"""Step 6: schemathesis fuzzes every operation of the server's own OpenAPI schema; no request gets a 500.

Cases are generated from the schema the server serves at /openapi.json (valid and invalid bodies,
query strings and paths), sent with a valid key so they reach validation and the handlers, and
bounded (MAX_EXAMPLES per operation; serve.max_tokens 8) so the run takes seconds. Chat completion
bodies name the served model half the time, so generation itself is fuzzed too, not only the 404.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_serve_support import auth, long_tiny_dir_fixture, one_torch_thread_fixture, start_server  # noqa: F401  (fixtures)

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode

MAX_EXAMPLES = 10  # per operation and mode: 10 operations x 2 modes x 10 = 200 requests


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory, long_tiny_dir: Path) -> Any:
    server = start_server(tmp_path_factory.mktemp("fuzz"), long_tiny_dir, "  max_tokens: 8\n  max_messages: 8\n")
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def hypothesis_home(tmp_path: Path) -> Any:
    """Hypothesis keeps caches in ./.hypothesis unless told otherwise; keep the checkout clean."""
    from hypothesis import configuration

    before = configuration.storage_directory()
    configuration.set_hypothesis_home_dir(str(tmp_path / "hypothesis"))
    yield
    configuration.set_hypothesis_home_dir(str(before))


def test_no_request_gets_a_server_error(fuzzed_server: Any) -> None:
    # Driven with hypothesis directly: schemathesis' pytest fixture loader does not run under pytest 9.
    document = httpx.get(f"{fuzzed_server.url}/openapi.json", headers=auth()).json()
    operations = [result.ok() for result in schemathesis.openapi.from_dict(document).get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/feedback", "/v1/models", "/metrics"}
    sent: list[int] = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def check(case: Any) -> None:
                if isinstance(case.body, dict) and case.path == "/v1/chat/completions" and zlib.crc32(
                        repr(case.body).encode()) % 2:
                    case.body["model"] = "p"  # the served model: past the 404, into limits, rendering, generation
                response = case.call_and_validate(base_url=fuzzed_server.url, headers=auth(),
                                                  checks=[not_a_server_error], timeout=30)
                sent.append(response.status_code)

            try:
                check()
            except Unsatisfiable:  # negative mode on an operation without inputs: nothing to corrupt
                assert mode == GenerationMode.NEGATIVE
    assert len(sent) >= len(operations) and 500 not in sent
    assert 200 in sent and {400, 422} & set(sent)  # both answers and refusals were reached
