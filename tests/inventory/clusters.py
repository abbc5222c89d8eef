"""Cluster descriptions that more than one test module places reservations on."""

from __future__ import annotations

from typing import Any

#: Two H100 nodes: "big" (two 3g.40gb instances and two whole GPUs) and "small" (a mixed MIG layout).
RESERVATION_CLUSTER: dict[str, Any] = {
    "nodes": [
        {
            "name": "big",
            "gpus": [
                {"model": "H100-80GB", "mig": ["3g.40gb", "3g.40gb"]},
                {"model": "H100-80GB", "count": 2},
            ],
        },
        {
            "name": "small",
            "gpus": [{"model": "H100-80GB", "mig": ["3g.40gb", "1g.10gb", "1g.10gb", "2g.20gb"]}],
        },
    ]
}
