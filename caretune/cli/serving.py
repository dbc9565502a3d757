"""Serving commands: chat, api, webui, export."""

from __future__ import annotations

from pathlib import Path

import click

from caretune.cli.base import main
from caretune.constants import DATASET_INFO, DEFAULT_TRAIN_RECIPE
from caretune.serving.defaults import (
    DEFAULT_API_PORT,
    DEFAULT_HOST,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_QUEUE,
    DEFAULT_REQUEST_TIMEOUT_S,
    DEFAULT_SERVED_MODEL_NAME,
    DEFAULT_SYSTEM_POLICY,
    DEFAULT_WEBUI_PORT,
    SYSTEM_POLICIES,
)


@main.command()
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False))
@click.option("--query", default=None, help="Answer this one question and exit (for scripts).")
@click.option("--system", default=None, help="System prompt (default: the recipe's, which tells users to see a doctor).")
def chat(recipe, query, system):
    """Chat with the model and adapter of a chat recipe (interactive; --query answers once).

    <think> blocks are never printed. Interactive: 'clear' forgets the conversation, 'exit' (or Ctrl-D) quits.
    """
    if query is not None and not query.strip():
        raise click.ClickException("--query is empty; ask a question")
    from caretune.serving.chat import ChatSession, converse

    session = ChatSession(recipe, system)
    if query is not None:
        click.echo("".join(session.stream(query)).strip())
        return
    click.echo("chat: type a question; 'clear' forgets the conversation, 'exit' or Ctrl-D quits", err=True)
    converse(session, _typed_lines(), lambda text: click.echo(text, nl=False))


def _typed_lines():
    """Lines typed at the prompt until end of input or Ctrl-C."""
    while True:
        try:
            yield input("\nUser: ")
        except (EOFError, KeyboardInterrupt):
            click.echo()
            return


@main.command()
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False))
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Other than loopback only with API_KEY set.")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_API_PORT, show_default=True)
@click.option(
    "--request-timeout",
    type=click.FloatRange(min=1),
    default=DEFAULT_REQUEST_TIMEOUT_S,
    show_default=True,
    help="Seconds a request may take from arrival, queue included (then 504).",
)
@click.option(
    "--max-queue",
    type=click.IntRange(min=0),
    default=DEFAULT_MAX_QUEUE,
    show_default=True,
    help="Requests that may wait behind the one being answered (more get 503 with Retry-After).",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    metavar="ORIGIN",
    help="Allow browser pages from ORIGIN (e.g. https://app.example.org); repeatable. Default: none.",
)
@click.option(
    "--log-bodies", is_flag=True, help="Also log request and answer text (phone, ID-card and e-mail masked). Default: counts only."
)
@click.option(
    "--served-model-name",
    "--model-name",
    "model_name",
    default=DEFAULT_SERVED_MODEL_NAME,
    show_default=True,
    help="The model id /v1/models lists; requests naming another get 404.",
)
@click.option(
    "--system-prompt",
    "system_prompt",
    type=click.Choice(SYSTEM_POLICIES),
    default=DEFAULT_SYSTEM_POLICY,
    show_default=True,
    help="A client's system message: enforce keeps the recipe's medical prompt (the client's is dropped and "
    "counted), prepend puts the medical prompt first, allow lets the client's replace it.",
)
@click.option(
    "--max-body-bytes",
    type=click.IntRange(min=1024),
    default=DEFAULT_MAX_BODY_BYTES,
    show_default=True,
    help="Larger request bodies get 413 before they are read.",
)
def api(recipe, host, port, request_timeout, max_queue, cors_origins, log_bodies, model_name, system_prompt, max_body_bytes):
    """OpenAI-compatible chat API (/v1/models, /v1/chat/completions) over a chat recipe's model.

    max_tokens is capped at the recipe's max_new_tokens; one answer is generated at a time. With API_KEY set,
    every route needs 'Authorization: Bearer $API_KEY'. <think> blocks are never sent; patient text is never
    logged unless --log-bodies.
    """
    from caretune.serving.serve import serve_api

    click.echo(f"api: http://{host}:{port}/v1", err=True)
    serve_api(
        recipe,
        host,
        port,
        {
            "request_timeout_s": request_timeout,
            "max_queue": max_queue,
            "cors_origins": tuple(cors_origins),
            "log_bodies": log_bodies,
            "model_name": model_name,
            "system_prompt": system_prompt,
            "max_body_bytes": max_body_bytes,
        },
    )


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False), default=DEFAULT_TRAIN_RECIPE)
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Other than loopback only with API_KEY set.")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_WEBUI_PORT, show_default=True)
@click.option(
    "--dataset-info",
    type=click.Path(dir_okay=False),
    default=DATASET_INFO,
    show_default=True,
    help="Its folder becomes the WebUI's default dataset_dir, so our datasets are listed.",
)
def webui(recipe, host, port, dataset_info):
    """LLaMA-Factory's WebUI with RECIPE's values in the training form (default: the Qwen3-8B training recipe).

    Its "Preview command" then shows the recipe's keys; login 'caretune' / $API_KEY when a key is set.
    """
    import os

    from caretune.serving.serve import check_bind
    from caretune.serving.webui import launch

    check_bind(host, os.environ.get("API_KEY"))
    if not Path(recipe).is_file():
        raise click.ClickException(f"{recipe}: no such recipe (run from the repository root, or name one)")
    click.echo(f"webui: http://{host}:{port}/ with {recipe} in the training form", err=True)
    launch(recipe, str(Path(dataset_info).resolve().parent), host, port, os.environ.get("API_KEY") or None)


@main.command("export")
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False))
def export_command(recipe):
    """Merge the LoRA adapter into the base model; the exported chat template defaults to non-thinking."""
    from caretune.recipe import load_recipe
    from caretune.serving.export import export
    from caretune.training.recipe_checks import check_siblings

    for warning in check_siblings(Path(recipe), load_recipe(recipe)):
        click.echo(f"export: {warning}", err=True)
    path = export(recipe)
    click.echo(f"exported to {path}: chat template and Ollama Modelfile default to non-thinking")
