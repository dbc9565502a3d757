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
    """Can a TCP connection to the endpoint's host be opened within `timeout` seconds?"""
    parsed = urlparse(endpoint)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


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
