"""Network endpoints: is a model/dataset hub reachable (asked before any download, so offline machines fail
fast), and does an address only reach this machine."""

from __future__ import annotations

import ipaddress
import os
import socket
from urllib.parse import urlparse

HF_ENDPOINT = "https://huggingface.co"
MODELSCOPE_ENDPOINT = "https://www.modelscope.cn"
PROBE_TIMEOUT_S = 3.0


def hf_offline() -> bool:
    """True when the user asked Hugging Face libraries to stay offline."""
    return any(
        os.environ.get(name, "").lower() in ("1", "true", "yes", "on") for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def reachable(endpoint: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Can the endpoint's host be reached within `timeout` seconds, the way the hub clients reach it: through the
    proxy that HTTPS_PROXY or HTTP_PROXY names for its scheme (a CONNECT the proxy accepts), unless NO_PROXY exempts
    the host; else by a direct TCP connection."""
    parsed = urlparse(endpoint)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    proxy = _proxy_for(parsed.scheme or "http", parsed.hostname or "")
    try:
        if proxy is None:
            with socket.create_connection((parsed.hostname, port), timeout=timeout):
                return True
        return _connect_through(proxy, parsed.hostname or "", port, timeout)
    except OSError:
        return False


def _proxy_for(scheme: str, host: str):
    """The proxy URL (parsed) the environment gives for `scheme` and `host`, or None (none set, or NO_PROXY)."""
    from urllib.request import getproxies_environment, proxy_bypass_environment

    proxies = getproxies_environment()
    proxy = proxies.get(scheme) or proxies.get("all")
    if not proxy or proxy_bypass_environment(host, proxies):
        return None
    return urlparse(proxy if "://" in proxy else f"http://{proxy}")


def _connect_through(proxy, host: str, port: int, timeout: float) -> bool:
    """Whether an HTTP proxy accepts a CONNECT to host:port (its userinfo sent as Basic credentials)."""
    import base64
    from urllib.parse import unquote

    headers = f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    if proxy.username is not None:
        credentials = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}".encode()
        headers += f"Proxy-Authorization: Basic {base64.b64encode(credentials).decode()}\r\n"
    with socket.create_connection((proxy.hostname, proxy.port or 8080), timeout=timeout) as connection:
        connection.sendall((headers + "\r\n").encode("latin-1"))
        status = connection.makefile("rb").readline(1024).split()
    return len(status) >= 2 and status[1] == b"200"


def hf_endpoint() -> str:
    """The Hugging Face endpoint (HF_ENDPOINT, e.g. a mirror, or the default)."""
    return os.environ.get("HF_ENDPOINT", HF_ENDPOINT)


def is_loopback(host: str) -> bool:
    """Whether a host name or address only reaches this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
