"""Sinks: where batches land (landing zone files, Kafka), behind a spool that survives outages."""
