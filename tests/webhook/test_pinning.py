from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest

from tests.support.k8s_openapi import default_schemas
from tests.webhook.pods import gpus, pod
from webhook.pinning import pin_to_node

REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
PIN = {"key": "metadata.name", "operator": "In", "values": ["gpu-7"]}
ZONE = {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a", "b"]}


@pytest.mark.parametrize(
    ("affinity", "terms"),
    [
        pytest.param(None, [{"matchFields": [PIN]}], id="no affinity"),
        pytest.param({"podAntiAffinity": {}}, [{"matchFields": [PIN]}], id="other affinity kept"),
        pytest.param({"nodeAffinity": {}}, [{"matchFields": [PIN]}], id="empty node affinity"),
        pytest.param(
            {
                "nodeAffinity": {
                    REQUIRED: {"nodeSelectorTerms": [{"matchExpressions": [ZONE]}, {"matchExpressions": []}]}
                }
            },
            [
                {"matchExpressions": [ZONE], "matchFields": [PIN]},
                {"matchExpressions": [], "matchFields": [PIN]},
            ],
            id="every ORed term also requires the node",
        ),
        pytest.param(
            {"nodeAffinity": {REQUIRED: {"nodeSelectorTerms": [{"matchFields": [PIN]}]}}},
            [{"matchFields": [PIN]}],
            id="already pinned: unchanged",
        ),
    ],
)
def test_the_pod_is_pinned_without_losing_its_own_constraints(affinity: Any, terms: list[Any]) -> None:
    p = pod(gpus(1))
    if affinity is not None:
        p["spec"]["affinity"] = affinity
    pinned = jsonpatch.apply_patch(copy.deepcopy(p), pin_to_node(p["spec"], "gpu-7"))
    assert pinned["spec"]["affinity"]["nodeAffinity"][REQUIRED]["nodeSelectorTerms"] == terms
    if affinity and "podAntiAffinity" in affinity:
        assert pinned["spec"]["affinity"]["podAntiAffinity"] == {}
    default_schemas().validate(pinned, "io.k8s.api.core.v1.Pod")
