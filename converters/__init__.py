"""Raw medical dialogue sources -> LLaMA-Factory datasets.

Each source module holds small pure functions over records; reading, writing,
dedupe, the held-out split, reports and the registry live at the edge
(`reader`, `writer`, `split`, `registry`, `pipeline`).
"""
