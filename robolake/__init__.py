"""robolake: robot demonstrations to versioned, audited RLDS datasets.

The core every other package imports (it imports none of them):
- the lake: lake.py (its layout, Build, GoldVersion), storage.py (every read and write,
  through Beam's FileSystems), staging.py (write beside, then move into place),
  overwrite.py (what a command proves before it replaces a path the user named),
  publish.py (a version's commit point), lease.py (one writer per version), gc.py,
  lake_views.py (DuckDB views over its tables), progress.py (workers' counters);
- the dataset spec: spec/ (fields, per-source specs, loading), names.py;
- statistics.py and normalization.py (dataset_statistics.json), hashing.py,
  provenance.py and lineage.py (where an artifact came from);
- shared by the reports: coverage_rule.py (under-sampled values), html_page.py, sql.py
  (user SQL), errors.py;
- sample/: the built-in sample generator;
- quiet.py: TensorFlow's and Beam's start-up lines kept off stderr, set up here, before
  any robolake module loads either (quiet_site/: the same for the processes robolake starts);
- lifeline.py: the processes a pipeline's driver starts (Beam's SDK workers) end with it."""

from robolake.quiet import quiet

quiet()

__version__ = "0.1.0"
