"""``python -m lake.serve``: live prices over WebSocket and SSE, gold over REST, and a web page."""
