"""RLDS -> torch data loading, LoRA fine-tuning (peft), evaluation and the policy runtime: to come."""
