"""Where dbt runs: single CLI calls (``cli``), the branch run's dbt process (``session``),
the production project (``project``), arguments (``args``), artifacts (``artifacts``),
generated profiles (``profiles``) and each branch's previous parse (``parse_cache``).

The production assets run dbt through dagster-dbt (``defs/assets/prod_dbt.py``) with the
arguments built here. Nothing in this package imports Dagster."""
