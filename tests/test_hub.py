"""caretune.hub: reachability as the hub client reaches a host, through HTTPS_PROXY / HTTP_PROXY unless NO_PROXY
exempts it; checked with a small CONNECT proxy on loopback."""

from __future__ import annotations

import socket
import socketserver
import threading
from contextlib import contextmanager

import pytest

from caretune.hub import reachable


@contextmanager
def connect_proxy(allow: bool = True):
    """A proxy that answers CONNECT with 200 (or 403) and records each request line and its headers."""
    seen: list[str] = []

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            head = b""
            while not head.endswith(b"\r\n\r\n") and (chunk := self.rfile.readline()):
                head += chunk
            seen.append(head.decode("latin-1"))
            self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n" if allow else b"HTTP/1.1 403 Forbidden\r\n\r\n")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(autouse=True)
def no_proxy_settings(monkeypatch):
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)


def test_a_host_behind_the_proxy_is_reached_through_it(monkeypatch):
    """Behind a hospital proxy a direct connect fails where the hub client, which uses the proxy, would succeed."""
    with connect_proxy() as (proxy, seen):
        monkeypatch.setenv("HTTPS_PROXY", proxy.replace("http://", "http://user:pa%20ss@"))
        assert reachable("https://huggingface.co", timeout=5)
    assert seen[0].startswith("CONNECT huggingface.co:443 HTTP/1.1\r\n") and "Proxy-Authorization: Basic " in seen[0]


def test_a_refusing_proxy_means_unreachable_and_http_uses_http_proxy(monkeypatch):
    with connect_proxy(allow=False) as (proxy, seen):
        monkeypatch.setenv("HTTP_PROXY", proxy)
        assert not reachable("http://10.0.0.1:6379", timeout=5)
    assert seen[0].startswith("CONNECT 10.0.0.1:6379 ")


def test_no_proxy_hosts_are_connected_to_directly(monkeypatch):
    port = closed_port()
    with connect_proxy() as (proxy, seen):
        monkeypatch.setenv("HTTPS_PROXY", proxy)
        monkeypatch.setenv("HTTP_PROXY", proxy)
        monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
        assert not reachable(f"http://127.0.0.1:{port}", timeout=2)  # direct, and nothing listens there
    assert seen == []
