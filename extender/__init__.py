"""Placement: kube-scheduler's extender protocol (wire), filter, prioritize, bind and preempt, the
GpuExtender service over the inventory cache, and the verbs' handlers."""
