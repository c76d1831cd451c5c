"""Learning from features: loading and standardising them, speaker-independent splits, the training loop
(written once), checkpoints, inference, metrics and evaluation reports."""
