"""Training world models: the loop, checkpoints, evaluation on held-out data, dream videos."""
