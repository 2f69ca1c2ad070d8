"""Lake definitions: the table registry, settings, the SparkSession factory and Delta I/O."""
