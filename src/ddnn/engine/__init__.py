"""Training engine: runtime (device/precision, processes), the run folder, the trainer loop, resume,
evaluation and the teachers it hands to distilling methods."""
