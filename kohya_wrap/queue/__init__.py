"""The run queue: sweeps, the queue database, workers and executors."""
