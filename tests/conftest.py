"""Shared test set-up: no test may reach the network.

Any connection to a non-loopback address raises at once, so a hidden hub
download fails loudly instead of hanging or passing on a developer's machine
with a warm cache.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest


class NetworkBlocked(RuntimeError):
    """Raised when a test tries to reach a non-loopback address."""


def _is_loopback(address: object) -> bool:
    if isinstance(address, tuple) and address:
        host = str(address[0])
    elif isinstance(address, (str, bytes)):  # AF_UNIX socket path
        return True
    else:
        return False
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _guarded_connect(self: socket.socket, address: object) -> object:
    if not _is_loopback(address):
        raise NetworkBlocked(f"tests may not reach the network (tried to connect to {address!r})")
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> object:
    if not _is_loopback(address):
        raise NetworkBlocked(f"tests may not reach the network (tried to connect to {address!r})")
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
    name = host.decode() if isinstance(host, bytes) else host
    if name not in (None, "localhost") and not _is_loopback((name,)):
        raise NetworkBlocked(f"tests may not reach the network (tried to resolve {name!r})")
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(autouse=True, scope="session")
def _no_network() -> object:
    patch = pytest.MonkeyPatch()
    patch.setattr(socket.socket, "connect", _guarded_connect)
    patch.setattr(socket.socket, "connect_ex", _guarded_connect_ex)
    patch.setattr(socket, "getaddrinfo", _guarded_getaddrinfo)
    yield
    patch.undo()


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> object:
    """A tiny random Llama with a ChatML tokenizer, saved as a Hugging Face folder."""
    from tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


# --- More tiny models, written once per session (tests/tiny.py builds them in process) ----------


@pytest.fixture(scope="session")
def tiny_model_dir_no_template(tmp_path_factory: pytest.TempPathFactory) -> object:
    """The `tiny_dir` model, its tokenizer without a chat template."""
    from tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "no-template", chat_template=None)


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> object:
    """The tiny model of `tiny_dir` (same seed) as a float32 llama .gguf file."""
    from tiny import save_tiny_gguf

    return save_tiny_gguf(tmp_path_factory.mktemp("tiny-gguf") / "tiny.gguf")


@pytest.fixture(scope="session")
def chromium() -> str:
    """Headless Chromium's binary (tests/browser.py); skips without one unless ADHERE_REQUIRE_BROWSER=1."""
    from browser import find_chromium

    return find_chromium()
