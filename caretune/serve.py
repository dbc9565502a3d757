"""Serving: the OpenAI-compatible API (caretune.api) and the WebUI (caretune.webui), loopback-only unless a key is set."""

from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path

from converters.errors import UserError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_API_PORT = 8000
DEFAULT_WEBUI_PORT = 7860
DEFAULT_REQUEST_TIMEOUT_S = 120.0  # API: per request, from arrival (time in the queue counts)
DEFAULT_MAX_QUEUE = 8  # API: requests waiting behind the one being answered; more get 503
SHUTDOWN_GRACE_S = 5  # after SIGTERM, how long open connections get to finish
WEBUI_STATE_DIR = ".cache/llamaboard"  # the WebUI's own state (LLaMA-Factory's llamaboard_cache/ and _config/)


class ServeError(UserError):
    """The server would be unsafe or cannot start; the message says what to do."""


def is_loopback(host: str) -> bool:
    """Whether a bind address only reaches this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None) -> None:
    """Anything but loopback needs API_KEY: an open medical model on a network is not a default."""
    if not is_loopback(host) and not api_key:
        raise ServeError(
            f"refusing to bind {host} without API_KEY: set API_KEY=<secret> (clients then send "
            "'Authorization: Bearer <secret>') or bind 127.0.0.1"
        )


def serve_api(recipe: str, host: str, port: int, settings: dict) -> None:
    """caretune.api's app over the recipe's model in this process; SIGTERM stops generations and exits."""
    from caretune.preflight import check_model_paths, load_recipe

    check_bind(host, os.environ.get("API_KEY"))
    args = load_recipe(recipe)
    check_model_paths(Path(recipe), args)
    backend = args.get("infer_backend", "huggingface")
    if backend not in ("huggingface", "hf"):
        raise ServeError(
            f"{recipe}: caretune api generates with the huggingface backend (its per-request limits "
            f"need it), not {backend}: set infer_backend: huggingface in a copy of the recipe"
        )
    import uvicorn

    from caretune.api import ApiSettings, create_app
    from caretune.generation import LocalGenerator
    from caretune.lf import chat_engine

    api_settings = ApiSettings(
        max_new_tokens=int(args.get("max_new_tokens", 1024)), api_key=os.environ.get("API_KEY") or None, **settings
    )
    app = create_app(LocalGenerator(chat_engine(args)), api_settings)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            app.state.shutdown.set()  # running and queued generations end now, their clients get 503
            super().handle_exit(sig, frame)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = uvicorn.Config(app, host=host, port=port, access_log=False, timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
    Server(config).run()
