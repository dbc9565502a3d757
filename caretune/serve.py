"""Serving through LLaMA-Factory: the OpenAI-compatible API and the WebUI, loopback-only unless a key is set."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from converters.errors import UserError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_API_PORT = 8000
DEFAULT_WEBUI_PORT = 7860
WEBUI_STATE_DIR = ".cache/llamaboard"  # the WebUI's own state (LLaMA-Factory's llamaboard_cache/ and _config/)


class ServeError(UserError):
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


def serve_api(recipe: str, host: str, port: int) -> None:
    """LLaMA-Factory's OpenAI-compatible app in this process, over a ChatModel that never shows <think>."""
    check_bind(host, os.environ.get("API_KEY"))
    import uvicorn
    from llamafactory.api.app import create_app

    from caretune.chat import think_free_chat_model
    from caretune.preflight import check_model_paths, load_recipe

    args = load_recipe(recipe)
    check_model_paths(Path(recipe), args)
    uvicorn.run(create_app(think_free_chat_model(args)), host=host, port=port)


def webui(dataset_dir: str, host: str, port: int) -> None:
    """LLaMA-Factory's WebUI with this project's dataset_info.json folder as its default dataset_dir."""
    check_bind(host, os.environ.get("API_KEY"))
    import llamafactory.webui.common as common

    common.DEFAULT_DATA_DIR = dataset_dir  # read when the UI modules below are imported
    # its saved arguments and DeepSpeed configs: in an ignored folder, not the repository root
    common.DEFAULT_CACHE_DIR = f"{WEBUI_STATE_DIR}/cache"
    common.DEFAULT_CONFIG_DIR = f"{WEBUI_STATE_DIR}/config"
    from llamafactory.webui.interface import create_ui

    auth = (("caretune", os.environ["API_KEY"]),) if os.environ.get("API_KEY") else None
    create_ui().queue().launch(server_name=host, server_port=port, inbrowser=False, auth=auth)
