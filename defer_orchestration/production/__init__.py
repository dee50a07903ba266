"""Where production builds, without Dagster: which commit of main to build (``plan``: the
main sensor's pure planner) and the build itself (``build``: check the commit out, run
the production dbt commands, decide publication). ``defs/assets/prod_dbt.py`` turns the
result into Dagster events."""
