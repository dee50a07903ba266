"""Pure logic with no Dagster imports: schema naming, dbt arguments, manifest store,
git queries, branch planning, run summaries and the error tree."""
