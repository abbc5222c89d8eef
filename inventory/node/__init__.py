"""What runs on each GPU node: the NVML reader (and fake GPUs behind the same interface), the kubelet
PodResources client, the health tracker, and the agent that publishes a GpuNode."""
