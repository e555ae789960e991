"""The marketer's script: its schema, loading it with errors by line, and durations."""
