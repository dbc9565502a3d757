"""Serving defaults shared by the CLI, the API and its launcher (a light module: no web framework imports)."""

DEFAULT_HOST = "127.0.0.1"
DEFAULT_API_PORT = 8000
DEFAULT_WEBUI_PORT = 7860
DEFAULT_REQUEST_TIMEOUT_S = 120.0  # API: per request, from arrival (time in the queue counts)
DEFAULT_MAX_QUEUE = 8  # API: requests waiting behind the one being answered; more get 503
SHUTDOWN_GRACE_S = 5  # after SIGTERM, how long open connections get to finish
WEBUI_STATE_DIR = ".cache/llamaboard"  # the WebUI's own state (LLaMA-Factory's llamaboard_cache/ and _config/)
DEFAULT_MAX_BODY_BYTES = 4 << 20  # API: larger request bodies get 413 before they are read
DEFAULT_SERVED_MODEL_NAME = "caretune"  # API: the `model` requests must name
SYSTEM_POLICIES = ("enforce", "prepend", "allow")  # API: what a client's system message may do to the medical prompt
DEFAULT_SYSTEM_POLICY = "enforce"
HEADER_TIMEOUT_S = 10.0  # API: from connecting (or from the last answer) to a request's complete headers; then closed
MAX_CONNECTIONS = 64  # API: open connections at once; a further one is closed at once (silent sockets count)
