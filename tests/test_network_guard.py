import socket
import urllib.request

import pytest
from conftest import NetworkBlocked


def test_outside_connections_fail_loudly() -> None:
    with pytest.raises(NetworkBlocked):
        socket.create_connection(("93.184.216.34", 80), timeout=1)
    with pytest.raises(Exception, match="may not reach the network"):
        urllib.request.urlopen("https://huggingface.co", timeout=1)


def test_loopback_is_allowed() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname(), timeout=1)
    client.close()
    server.close()
