"""VLA fine-tuning on gold RLDS versions: config, data loading, the compact VLA, the training loop, checkpoints."""
