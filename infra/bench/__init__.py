"""Every cryptolake benchmark and its helpers; ``python -m infra.bench`` (``make bench``) runs them.

One module per component, each with ``run(*, quick: bool) -> dict`` of figures (and most with a
CLI of their own for other sizes and loads):

- :mod:`infra.bench.simulator`: the exchange simulator's start time and CPU;
- :mod:`infra.bench.extractor` (and :mod:`infra.bench.replay`, the replay feed): one extractor
  process's throughput per core, RSS and trade latency;
- :mod:`infra.bench.silver`: a fixed landed sample through bronze and silver;
- :mod:`infra.bench.live`: freshness of the live pipeline at a real load;
- :mod:`infra.bench.gold`: milliseconds per gold update on a warm lake;
- :mod:`infra.bench.quality`: what data-quality validation costs a micro-batch;
- :mod:`infra.bench.serve`: live-feed latency to a WebSocket client, and REST latency.

Production packages (``extractors``, ``spark_jobs``, ``lake``, ``expectations`` and the rest of
``infra``) never import this package; ``python -m infra.check_imports`` (``make check``) fails
when one does. Figures are measurements, not assertions: nothing here fails on a slow machine.
"""
