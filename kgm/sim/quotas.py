"""Team quotas in `kgm simulate`: the cluster file's quotas, enforced by the production admission code
(``webhook.quota`` over an ``inventory.live.quotas.QuotaBook``) on the simulated pods.

Each pod belongs to one of the quotas' teams, drawn by share from the run's seed. An admitted pod is
held against its team until it is bound (then it counts on its node's model) or refused by the
scheduler; a pod waiting for room keeps its hold, as a Pending pod counts against a ResourceQuota.
Without quotas in the cluster file nothing changes: pods have no team and nothing is judged.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any

from inventory.domain.labels import QUOTA_ADMISSION, TEAM
from inventory.domain.model import ClusterInventory
from inventory.domain.offer import Offer
from inventory.domain.quota import QuotaAsk, Refusal
from inventory.live.cache import InventoryCache
from inventory.live.quotas import QuotaBook
from webhook.mutation import Admit, Deny
from webhook.quota import judge

# kgm.sim.production imports this module; the run is typed loosely to keep the import one way.
_NAMESPACE = "sim"


class SimQuotas:
    def __init__(
        self, cluster: ClusterInventory, cache: InventoryCache, offer: Offer, *, seed: int, run: Any
    ) -> None:
        self._run = run
        self._rng = random.Random(f"teams-{seed}")
        self._teams = [q.quota.team for q in cluster.quotas if q.quota.team and q.share > 0]
        self._weights = [q.share for q in cluster.quotas if q.quota.team and q.share > 0]
        self._book: QuotaBook | None = None
        self._last: list[Refusal] = []
        if cluster.quotas:
            self._book = QuotaBook(
                snapshot=cache.snapshot,
                offer=lambda: offer,
                prices=cluster.prices,
                catalogue=cluster.catalogue,
                assume_ttl_s=math.inf,  # a hold ends when its pod is bound or refused, never by time
            )
            self._book.replace_quotas(q.quota for q in cluster.quotas)

    def team_of(self, pod: dict[str, Any]) -> dict[str, Any]:
        """``pod`` with the team it belongs to (its annotation, which the webhook makes its label)."""
        if self._teams:
            team = self._rng.choices(self._teams, weights=self._weights)[0]
            pod["metadata"].setdefault("annotations", {})[TEAM] = team
        return pod

    def judge(self, pod: Mapping[str, Any], decision: Admit | Deny) -> Admit | Deny:
        """The mutation's ``decision``, then the quotas' (counted by quota and unit when they refuse)."""
        if self._book is None or not isinstance(decision, Admit):
            return decision
        judged = judge(
            pod,
            decision,
            uid=str(pod["metadata"]["uid"]),
            namespace=_NAMESPACE,
            dry_run=False,
            check=self._check,
        )
        if isinstance(judged, Deny):
            for refusal in self._last:
                self._run.refused_by_quota[f"{refusal.quota.scope}: {refusal.unit.value}"] += 1
        return judged

    def bound(self, pod: Mapping[str, Any]) -> None:
        """A pod bound: it counts itself (on its node's model) instead of its admission's hold."""
        if self._book is not None:
            self._book.apply_pod("ADDED", pod)

    def forget(self, pod: Mapping[str, Any]) -> None:
        """A pod the scheduler refused holds nothing any more."""
        key = ((pod.get("metadata") or {}).get("annotations") or {}).get(QUOTA_ADMISSION)
        if self._book is not None and isinstance(key, str):
            self._book.forget(key)

    def _check(self, ask: QuotaAsk) -> list[Refusal]:
        assert self._book is not None
        self._last = self._book.admit(ask)
        return self._last
