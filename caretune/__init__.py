"""caretune: fine-tune Qwen3 into a careful Chinese medical-consultation assistant."""

__version__ = "0.1.0"
