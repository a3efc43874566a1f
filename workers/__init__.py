"""workers: run eventbus consumers as a supervised pool of processes (one per consumer)."""
