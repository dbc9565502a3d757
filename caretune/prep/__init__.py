"""Data preparation: checking converted datasets through LLaMA-Factory, token lengths, the tokenizer, data cards, raw downloads."""
