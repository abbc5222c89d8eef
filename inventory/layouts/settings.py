"""How `kgm serve` runs the MIG planner (``--mig-planner``, ``KGM_MIG_PLANNER``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from inventory.domain.mig_plan import PlanSettings


class PlannerMode(StrEnum):
    #: No planning at all.
    OFF = "off"
    #: Plans every interval and shows them (REST, metrics, log); changes nothing in the cluster.
    RECOMMEND = "recommend"
    #: As recommend, and the leader applies the changes through NVIDIA's MIG manager.
    APPLY = "apply"


@dataclass(frozen=True, slots=True)
class LayoutSettings:
    mode: PlannerMode = PlannerMode.RECOMMEND
    """Recommend by default: a plan to read, nothing changed until an operator opts in (and grants the
    RBAC of ``manifests/components/mig-apply``)."""

    interval_s: float = 30.0
    """Seconds between planning rounds: demand moves in minutes, a reconfiguration takes one or more."""

    configmap_namespace: str = "gpu-operator"
    """Namespace of the MIG manager's ConfigMap: the GPU Operator's."""

    configmap_name: str = "kgm-mig-parted-config"
    """The ConfigMap kgm writes its configs into; point the GPU Operator's ``migManager.config.name``
    at it. Entries not named ``kgm-*`` in it are left as they are."""

    apply_timeout_s: float = 900.0
    """Seconds a change may take, from the label to the agent's report of the new layout (the MIG
    manager may reboot the node); after that it is logged as timed out and the node is free again."""

    recent_pods: int = 200
    """How many of the last GPU pods make the recent mix the free capacity is shaped after."""

    plan: PlanSettings = field(default_factory=lambda: PlanSettings(change_gpus_in_use=False))
    """The planner's budgets. ``change_gpus_in_use`` is False, and stays so in every mode: mig-parted
    applies whole-GPU layouts, re-creating a changed GPU's every instance, so a GPU with anything held
    is never changed (recommend shows what apply would do)."""
