"""Branch-vs-production data diff: which models and keys (``keys``), the SQL comparison
(``compare``), the report (``report``). Reads the warehouse through its interface only."""
