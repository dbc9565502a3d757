"""Generation, one seam below evaluation and serving: LLaMA-Factory's ChatModel as a user sees it or as generated
(chat_models.py), the API's generator with its stop switch (local.py), and the `<think>` blocks an answer must never
show (think_blocks.py)."""
