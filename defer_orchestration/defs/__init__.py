"""Dagster wiring only: production assets (``assets/``), jobs, sensors, schedules and the
resolution of the latest published manifest from the event log. Logic lives in the
Dagster-free packages (``branch/``, ``dbt/``, ``warehouse/``, ``diff/``, ``lib/``)."""
