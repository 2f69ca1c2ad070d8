"""One module per exchange: endpoints, limits, subscribe messages and frame classification; no I/O."""
