"""What the cluster's GPUs are, what is free, and what happened: the domain core (``domain/``), the node
agent (``node/``), each replica's live view (``live/``), the ledger (``ledger/``), reservations,
notifications, the REST API, and the Kubernetes adapter (``kube/``, ``leader.py``)."""
