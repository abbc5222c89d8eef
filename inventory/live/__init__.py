"""What every controller replica holds: the inventory cache fed by list-then-watch reflectors over
GpuNodes, pods and nodes (or filled once from a cluster file), and its scrape-time metrics."""
