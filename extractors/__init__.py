"""Asyncio websocket extractors: one module per exchange, a shared runner, batching and sinks."""
