"""Column-level impact of a branch: which modified models break what downstream (issue 23).

Pure: manifest dicts, compiled SQL (parsed with sqlglot in the warehouse's dialect) and,
optionally, warehouse columns in; JSON-ready results out. No dbt, no Dagster, no
warehouse connection.

    analysis.py   analyze_impact(): classify each modified node, follow changes downstream
    sql.py        analyze_sql(): one query's column lineage, fingerprints and row rule
    relations.py  table reference -> unique_id; how ``columns`` is keyed (relation_key)
    contract.py   contract_verdict(): dbt's ModelNode.same_contract, reproduced
"""

from defer_orchestration.impact.analysis import (
    CATEGORIES, ROWS_KEY, ColumnChanges, ImpactReport, Impacted, NodeImpact, analyze_impact,
)
from defer_orchestration.impact.contract import contract_verdict
from defer_orchestration.impact.relations import Columns, relation_key
from defer_orchestration.impact.sql import SqlLineage, SqlNotAnalyzable, analyze_sql

__all__ = [
    "CATEGORIES", "ROWS_KEY", "ColumnChanges", "Columns", "ImpactReport", "Impacted", "NodeImpact",
    "SqlLineage", "SqlNotAnalyzable", "analyze_impact", "analyze_sql", "contract_verdict",
    "relation_key",
]
