"""Production assets: the dbt models built into ``prod`` and the ``prod_manifest`` artifact
that branch builds defer to."""
