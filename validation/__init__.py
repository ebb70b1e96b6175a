"""Audits of a published dataset version, over the lake's DuckDB views.

- gate.py and checks.py (thresholds in gate.yaml): the quality gate, `robolake validate`,
  run through Great Expectations;
- coverage.py, coverage_model.py, html_report.py: the coverage report, `robolake report`;
- query.py: `robolake query`; selection_stats.py: `robolake stats`."""
