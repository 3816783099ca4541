"""Training, evaluation, the checkpoint cache and the driver that runs a suite."""
