"""The OpenAI-compatible chat API: validated requests, bounded work, logs without patient text.

- Requests are checked before any work; a bad one gets HTTP 400 with an OpenAI-style error body
  (`error.message`, `error.type`, `error.param`). `max_tokens` is capped at the recipe's max_new_tokens.
- One generation runs at a time; at most `max_queue` requests wait, more get 503 with Retry-After.
  Each request has `request_timeout_s` from arrival (queue included): past it, 504 (or an error event
  when streaming). A client that goes away, or SIGTERM, stops its generation at the next token.
- The log has one line per request: id, method, path, status, prompt and completion tokens, latency.
  Message text is logged only with `log_bodies`, through the converters' PII masker.
- No CORS unless origins are named; with an API key, every route needs it (docs and schema too).
- Admission before any route reads a request (`Admission`): the key, the framing, the body's size counted as it
  arrives, and the deadline over the body; at most MAX_MESSAGES messages.
- Prompt limits, as OpenAI's API behaves, all before any prefill (a bound from bytes before tokenizing): a
  prompt whose tokens plus the capped max_tokens exceed the context gets 400 `context_length_exceeded`; a
  prompt the model would take longer to read than the request has left (at the prefill rate measured on earlier
  requests) gets 504 `prompt_too_slow`; text that cannot be encoded gets 400.
- Message text is text: one holding a chat-control token (`<|im_start|>`, `<|im_end|>`, `<|endoftext|>`, any
  `<|…|>`) gets 400 naming the token and the message, since the tokenizer would read it as a turn boundary: a user
  message could otherwise open a second system turn after the medical one and undo `enforce`.
- The system prompt policy: `enforce` (default) always uses the recipe's medical prompt and drops a client's
  system messages (counted in the log line, never their text); `prepend` puts the medical prompt before the
  client's; `allow` lets a client's replace it. `model` must be the served name (404 `model_not_found`).
"""

from caretune.serving.api.app import create_app
from caretune.serving.api.settings import ApiSettings

__all__ = ["ApiSettings", "create_app"]
