"""The fault matrix: real workers, a real broker and the provider sandbox, one fault at a time (run.py)."""
