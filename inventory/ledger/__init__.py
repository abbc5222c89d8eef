"""What happened: the allocation ledger (the store protocol and its SQL implementation), the
reconciler that records allocations and releases from pod events, and the ledger's metrics."""
