"""``defer-orch``: the command line of developers and CI steps.

One module per command group (``state``, ``status``, ``preview``, ``report``, ``dev``), each
a thin shell over ``branch/``, ``dbt/``, the artifact store and the Dagster instance API:
no logic of its own. It reads the same environment variables (``resources.py``) and the
same Dagster instance (``DAGSTER_HOME``) as the code location; the UI and the daemon need
not run.

Exit codes: 0 ok; 1 the thing failed (a build, a missing manifest); 2 usage or
configuration error (one line saying what to set). ``--json`` output schemas are
documented in the README ("Developing locally").
"""
