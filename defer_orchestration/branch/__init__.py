"""Where a branch build is decided and run, as stages with plain settings (no Dagster):
``plan`` (which branch heads get a run: the sensors' pure planner), ``request`` (the
launch options), ``comparison`` (which state ``state:`` selectors compare against),
``checkout``, ``preflight`` (what the build reads from production, and incremental
seeding), ``build`` (the sequence), ``retry`` and ``report``."""
