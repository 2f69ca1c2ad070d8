"""Local services without Docker: JVM jars, Kafka, MinIO, the exchange simulator, benchmarks."""
