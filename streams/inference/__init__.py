"""Inference: the worker that answers each clip with the two-step chain of thought, its engines, and the sink that
writes the answers to Postgres."""
