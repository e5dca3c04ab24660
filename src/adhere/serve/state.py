"""What every route of one server shares: config, keys, engine, monitor; and the auth checks on them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.security import HTTPBearer

from adhere.serve.auth import SESSION_COOKIE, Keys
from adhere.serve.engine import Engine
from adhere.serve.monitor import Metrics, Monitor
from adhere.serve.protocol import ApiError
from adhere.serve.vllm_engine import VllmEngine

if TYPE_CHECKING:
    from adhere.config import ProjectConfig

# Declares the scheme in the OpenAPI schema (for clients and schemathesis); the check is ours, below.
bearer_scheme = HTTPBearer(auto_error=False, description="An API key: Authorization: Bearer <key>")


@dataclass
class ServerState:
    """One running server: what its routes read."""

    config: ProjectConfig
    keys: Keys
    engine: Engine | VllmEngine  # serve.engine 'local' or 'vllm': one interface
    monitor: Monitor
    metrics: Metrics
    model_name: str
    run_id: str
    started: float = field(default_factory=time.time)
    info: dict[str, Any] = field(default_factory=dict)  # what is served, for /v1/models and the dashboard


def server_state(request: Request) -> ServerState:
    """The state of the server handling `request`."""
    return request.app.state.server


def require_key(request: Request) -> str:
    """FastAPI dependency: a valid `Authorization: Bearer <key>`, or 401 in OpenAI's error shape."""
    state = server_state(request)
    header = request.headers.get("authorization")
    digest = state.keys.check_bearer(header)
    if digest is None:
        message = ("invalid API key" if header else
                   "no API key: send the header 'Authorization: Bearer <key>'")
        raise ApiError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
    return digest


def viewer(request: Request) -> bool:
    """Whether the request may read the dashboard: a valid key, or a valid session cookie."""
    state = server_state(request)
    if state.keys.check_bearer(request.headers.get("authorization")) is not None:
        return True
    return state.keys.check_session(request.cookies.get(SESSION_COOKIE))


def require_viewer(request: Request) -> None:
    """FastAPI dependency: `viewer`, or 401."""
    if not viewer(request):
        raise ApiError(401, "sign in at /dashboard with an API key, or send 'Authorization: Bearer <key>'",
                       code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
