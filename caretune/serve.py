"""Serving through LLaMA-Factory: the OpenAI-compatible API and the WebUI, loopback-only unless a key is set."""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_API_PORT = 8000
DEFAULT_WEBUI_PORT = 7860


class ServeError(Exception):
    """The server would be unsafe or cannot start; the message says what to do."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None) -> None:
    """Anything but loopback needs API_KEY: an open medical model on a network is not a default."""
    if not is_loopback(host) and not api_key:
        raise ServeError(f"refusing to bind {host} without API_KEY: set API_KEY=<secret> (clients then send "
                         "'Authorization: Bearer <secret>') or bind 127.0.0.1")


def _llamafactory_cli() -> str:
    cli = Path(sys.executable).with_name("llamafactory-cli")
    if not cli.exists():
        raise ServeError("llamafactory-cli not found beside this Python; run `make setup`")
    return str(cli)


def exec_api(recipe: str, host: str, port: int) -> None:
    """Replace this process with LLaMA-Factory's API server (so its PID is ours to stop)."""
    check_bind(host, os.environ.get("API_KEY"))
    env = {**os.environ, "API_HOST": host, "API_PORT": str(port)}
    cli = _llamafactory_cli()
    os.execve(cli, [cli, "api", recipe], env)


def webui(dataset_dir: str, host: str, port: int) -> None:
    """LLaMA-Factory's WebUI with this project's dataset_info.json folder as its default dataset_dir."""
    check_bind(host, os.environ.get("API_KEY"))
    import llamafactory.webui.common as common

    common.DEFAULT_DATA_DIR = dataset_dir  # read when the UI modules below are imported
    from llamafactory.webui.interface import create_ui

    auth = (("caretune", os.environ["API_KEY"]),) if os.environ.get("API_KEY") else None
    create_ui().queue().launch(server_name=host, server_port=port, inbrowser=False, auth=auth)
