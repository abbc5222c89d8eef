"""Pinning a pod to the node its reservation holds: a required node affinity on the node's name.

``matchFields`` on ``metadata.name`` rather than a hostname label: the node name is exact, labels
can differ from it on some clouds. Terms of a required node affinity are ORed, so the field is
added to every existing term (each then also requires the node) rather than as a new term.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from webhook.patch import PatchOp

_REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"


def pin_to_node(spec: Mapping[str, Any], node: str) -> list[PatchOp]:
    """Operations that make ``spec`` schedulable on ``node`` only, keeping its other constraints."""
    requirement = {"key": "metadata.name", "operator": "In", "values": [node]}
    term = {"matchFields": [requirement]}
    affinity = spec.get("affinity")
    if not isinstance(affinity, Mapping):
        return [
            {
                "op": "add",
                "path": "/spec/affinity",
                "value": {"nodeAffinity": {_REQUIRED: {"nodeSelectorTerms": [term]}}},
            }
        ]
    node_affinity = affinity.get("nodeAffinity")
    if not isinstance(node_affinity, Mapping):
        return [
            {
                "op": "add",
                "path": "/spec/affinity/nodeAffinity",
                "value": {_REQUIRED: {"nodeSelectorTerms": [term]}},
            }
        ]
    required = node_affinity.get(_REQUIRED)
    terms = required.get("nodeSelectorTerms") if isinstance(required, Mapping) else None
    if not isinstance(terms, list) or not terms:
        return [
            {
                "op": "add",
                "path": f"/spec/affinity/nodeAffinity/{_REQUIRED}",
                "value": {"nodeSelectorTerms": [term]},
            }
        ]
    ops: list[PatchOp] = []
    for index, existing in enumerate(terms):
        base = f"/spec/affinity/nodeAffinity/{_REQUIRED}/nodeSelectorTerms/{index}/matchFields"
        fields = existing.get("matchFields") if isinstance(existing, Mapping) else None
        if isinstance(fields, list):
            if requirement not in fields:
                ops.append({"op": "add", "path": f"{base}/-", "value": requirement})
        else:
            ops.append({"op": "add", "path": base, "value": [requirement]})
    return ops
