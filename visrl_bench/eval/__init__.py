"""Evaluation: a model over a task's samples (evaluate), predictions scored offline (scoring), run
metrics (aggregate)."""
