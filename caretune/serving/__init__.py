"""Serving: one-shot and interactive chat, the OpenAI-compatible API, the WebUI and export."""
