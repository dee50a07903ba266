"""Generic helpers with no Dagster imports: git, the manifest store, schema names, plain
settings, backoff, phase timing and the error tree (``errors``)."""
