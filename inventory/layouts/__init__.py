"""MIG layouts chosen from the workload, in `kgm serve`: the planning loop, its signals and its applier."""
