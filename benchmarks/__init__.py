"""Benchmarks for defer-orchestration: synthetic dbt projects of configurable size."""
