"""Training: recipes and their generator, preflight, plan and its memory model, the throughput bench,
launching and tracking runs."""
