"""Training engine: runtime (device/precision), checkpoints, the trainer loop, evaluation."""
