"""Planning: the plan of a run (steps, time, memory, cost), its memory model, and the throughput bench."""
