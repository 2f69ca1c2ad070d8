"""Pytest fixtures for the real local services (Kafka, MinIO); filled in by infra/services."""
