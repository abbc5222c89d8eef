"""Capacity held before its pod exists: one request parser for the REST API and the GpuAllocation
resource, the reserver (cache hold + ledger row), and the GpuAllocation controller."""
