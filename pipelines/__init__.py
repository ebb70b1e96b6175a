"""Apache Beam pipelines that build dataset versions (`robolake convert`, `mix`, `edit`).

- build.py: the convert command: plan, run, reconcile counts, publish; derive.py: mix and edit;
- convert.py: the pipeline graph; curation.py: statistics and outlier filtering; stats.py,
  filters.py, splits.py: their pieces;
- sources.py: the SourceReader protocol and the READERS registry; hdf5_source.py,
  rosbag_source.py (with rosbag_reader.py, ros_messages.py, alignment.py), rlds_source.py,
  lerobot_source.py, lake_source.py: one reader per source format; state_layout.py: the
  manifest's state layout of readers whose state is named parts; episode.py: what flows between stages;
- images.py: frame preprocessing; silver_writer.py, rlds_writer.py, tfrecord.py: the
  silver Parquet and gold RLDS writers; raw_manifest.py: registered raw files;
  beam_options.py: the flags handed to Beam."""
