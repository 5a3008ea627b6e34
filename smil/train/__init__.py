"""Training: one loop for single- and multi-view, DDP, checkpoints with exact resume, schedules."""
