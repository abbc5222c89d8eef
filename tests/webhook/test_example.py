"""The README's example review does what the README shows."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from inventory.domain.cluster_file import load_cluster
from inventory.domain.offer import offer_of
from webhook.admission import Outcome, answer
from webhook.review import parse_review
from webhook.settings import WebhookSettings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "admissionreview-inference-pod.json"


def test_the_readme_example_moves_an_18_gb_inference_pod_to_a_2g_20gb_instance() -> None:
    result = answer(parse_review(EXAMPLE.read_bytes()), offer_of(load_cluster("demo")), WebhookSettings())
    assert result.outcome is Outcome.MUTATED
    patch = json.loads(base64.b64decode(json.loads(result.body)["response"]["patch"]))
    assert {
        "op": "add",
        "path": "/spec/containers/0/resources/limits/nvidia.com~1mig-2g.20gb",
        "value": "1",
    } in patch
