"""``make run``: the live lake, supervised (see :mod:`infra.run.__main__` and docs/run.md).

- :mod:`infra.run.source`: real exchanges or the simulator (probe, then a pure decision);
- :mod:`infra.run.plan`: folders, ports and each child's command and environment (pure);
- :mod:`infra.run.policy`: restart with capped jittered backoff, give up on a child that keeps dying;
- :mod:`infra.run.status`: what the status view shows, from /metrics and the Delta logs;
- :mod:`infra.run.supervisor`: starting, restarting and stopping the children in order.
"""
