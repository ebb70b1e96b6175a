"""Quality gate (Great Expectations) and coverage reports (DuckDB) over the lake: to come."""
