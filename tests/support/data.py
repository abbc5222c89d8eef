"""Where the tests' data lives: ``tests/data/`` in the repository, so a clone with nothing beside it
passes. ``SHARED`` is the project's shared material (``<repo>/../shared``) the copies came from; only
``tests/test_data_copies.py`` reads it, and only where it is present."""

from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parents[2]
DATA: Final = REPO / "tests" / "data"
#: AdmissionReview and scheduler-extender wire examples built from the Kubernetes sources.
K8S_FIXTURES: Final = DATA / "k8s"
#: The official Kubernetes 1.35 OpenAPI v3 documents of the groups the tests validate against.
K8S_OPENAPI: Final = DATA / "k8s-openapi"
#: Alibaba's GPU cluster trace (the FGD paper's): the GPU node list and the default pod list.
ALIBABA_TRACE: Final = DATA / "traces" / "alibaba-gpu-v2023"
#: The MIG profile tables the program ships (a copy of ``shared/fixtures/mig-profiles.json``).
PACKAGED_MIG_TABLES: Final = REPO / "inventory" / "data" / "mig-profiles.json"

SHARED: Final = REPO.parent / "shared"
