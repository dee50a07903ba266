"""defer-orchestration: open-source slim CI for dbt on Dagster.

Importing this package does nothing: definitions are built lazily by
``defer_orchestration.definitions`` when Dagster asks for ``defs``.
"""
