"""Training, evaluation, the checkpoint cache and the suite runner."""
