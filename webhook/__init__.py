"""Admission: the AdmissionReview wire format, the pure mutation (pod in, decision out), the JSON
Patch, and the /mutate handler."""
