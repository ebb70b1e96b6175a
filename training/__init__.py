"""VLA policies trained and evaluated on gold RLDS versions.

- config.py: the training config (with the data section); data.py: gold RLDS -> torch;
  frames.py: camera frames as the model reads them;
- model.py and tokenizers.py: the compact VLA; train.py: the training loop, `robolake
  train`; checkpoint.py: bundles;
- evaluate.py (`robolake evaluate`), metrics.py, sim_env.py, rollout.py, eval_report.py:
  offline and closed-loop evaluation;
- runtime.py: the safe policy runtime; export.py: TorchScript export, `robolake export`."""
