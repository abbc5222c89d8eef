"""Tests of the manifests under manifests/: the object files, the kustomizations rendered, the scheduler's
configuration, the CRDs and the alert rules."""
