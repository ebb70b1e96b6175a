"""Apache Beam pipelines: sources, image transforms, splits and the lake/RLDS writers."""
