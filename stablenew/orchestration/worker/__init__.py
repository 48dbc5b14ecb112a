"""What runs on a GPU machine: the in-process pool worker, its GPU gate and cancel watch,
the flow's WebUI rendering, and the pool's recovery of dead workers' runs."""
