"""Serving defaults shared by the CLI, the API and its launcher (a light module: no web framework imports)."""

DEFAULT_HOST = "127.0.0.1"
DEFAULT_API_PORT = 8000
DEFAULT_WEBUI_PORT = 7860
DEFAULT_REQUEST_TIMEOUT_S = 120.0  # API: per request, from arrival (time in the queue counts)
DEFAULT_MAX_QUEUE = 8  # API: requests waiting behind the one being answered; more get 503
SHUTDOWN_GRACE_S = 5  # after SIGTERM, how long open connections get to finish
WEBUI_STATE_DIR = ".cache/llamaboard"  # the WebUI's own state (LLaMA-Factory's llamaboard_cache/ and _config/)
