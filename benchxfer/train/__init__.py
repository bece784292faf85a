"""The per-worker training function and what it needs: metrics, checkpoints, tracking of one run."""
