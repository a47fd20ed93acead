"""ServableEvaluator: calls every serving signature and blesses or rejects the model."""
