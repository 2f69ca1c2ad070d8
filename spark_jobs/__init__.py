"""Spark Structured Streaming jobs: bronze, silver and gold, pure transforms apart from I/O."""
