"""Starting servers: the OpenAI-compatible API (caretune.serving.api) and the bind rule the WebUI shares
(loopback only unless a key is set)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from caretune.basics.errors import UserError
from caretune.hub import is_loopback
from caretune.serving.defaults import SHUTDOWN_GRACE_S


def check_bind(host: str, api_key: str | None) -> None:
    """Anything but loopback needs API_KEY: an open medical model on a network is not a default."""
    if not is_loopback(host) and not api_key:
        raise UserError(
            f"refusing to bind {host} without API_KEY: set API_KEY=<secret> (clients then send "
            "'Authorization: Bearer <secret>') or bind 127.0.0.1"
        )


def check_medical_prompt(recipe: str, args: dict, policy: str) -> None:
    """Under enforce or prepend the recipe's default_system is the medical prompt every answer gets: a recipe
    without one would serve no medical prompt at all."""
    if policy in ("enforce", "prepend") and not str(args.get("default_system") or "").strip():
        raise UserError(
            f"{recipe}: no default_system, so --system-prompt {policy} would serve no medical prompt at all; "
            "use a chat recipe (recipes/*/chat.yaml carries it) or add default_system"
        )


def serve_api(recipe: str, host: str, port: int, settings: dict) -> None:
    """caretune.serving.api's app over the recipe's model in this process; SIGTERM stops generations and exits."""
    from caretune.recipe import load_recipe
    from caretune.training.recipe_checks import check_model_paths

    check_bind(host, os.environ.get("API_KEY"))
    args = load_recipe(recipe)
    check_medical_prompt(recipe, args, settings.get("system_prompt", "enforce"))
    check_model_paths(Path(recipe), args)
    backend = args.get("infer_backend", "huggingface")
    if backend not in ("huggingface", "hf"):
        raise UserError(
            f"{recipe}: caretune api generates with the huggingface backend (its per-request limits "
            f"need it), not {backend}: set infer_backend: huggingface in a copy of the recipe"
        )
    from caretune.generation.local import LocalGenerator
    from caretune.lf import chat_engine
    from caretune.serving.api import ApiSettings, create_app

    generator = LocalGenerator(chat_engine(args))
    api_settings = ApiSettings(
        max_new_tokens=int(args.get("max_new_tokens", 1024)),
        api_key=os.environ.get("API_KEY") or None,
        default_system=args.get("default_system"),
        context_length=int(args["cutoff_len"]) if args.get("cutoff_len") else generator.context_length,
        **settings,
    )
    run_app(create_app(generator, api_settings), host, port)


def uvicorn_config(app, host: str, port: int, log_level: str | None = None, **limits):
    """uvicorn's configuration for the API: its guarded HTTP protocol (caretune.serving.connections: a deadline for
    request headers, a limit on open connections; `limits` are guarded_protocol's), no access log."""
    import uvicorn

    from caretune.serving.connections import guarded_protocol

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(**limits),
        access_log=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        log_level=log_level,
    )


def run_app(app, host: str, port: int) -> None:
    """Serve an app of caretune.serving.api until SIGTERM or SIGINT: running and queued generations end at once
    (their clients get 503) and the server exits within SHUTDOWN_GRACE_S."""
    import uvicorn

    stopped_by = []

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            stopped_by.append(sig)
            app.state.shutdown.set()
            super().handle_exit(sig, frame)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = uvicorn_config(app, host, port)
    try:
        Server(config).run()
    finally:
        if stopped_by:  # every client has its answer; a generation still reading its prompt is not waited for
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(128 + stopped_by[0])
