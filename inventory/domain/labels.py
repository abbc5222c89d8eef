"""Every label, annotation and resource key the code reads or writes, spelled once.

``gpu.kgm.io/...`` keys are ours: users write some on their pods, the webhook writes the others.
``nvidia.com/...`` keys belong to NVIDIA's GPU operator (device plugin, gpu-feature-discovery,
mig-manager): we only read them, and must spell them exactly as it does.
"""

from __future__ import annotations

from typing import Final

# -- Ours: gpu.kgm.io -----------------------------------------------------------------------------

#: The API group of our CRDs (GpuNode, GpuAllocation) and the prefix of our pod keys.
GROUP: Final = "gpu.kgm.io"
#: Every pod label and annotation of ours starts with this.
PREFIX: Final = GROUP + "/"

#: Label, by kgm serve on its own pod while it holds the Lease (value ``inventory.leader.ROLE_LEADER``);
#: the Service ``kgm-leader`` (the extender's and reservations' address) selects it.
ROLE: Final = PREFIX + "role"
#: Annotation, by the user: GPU memory the workload needs, in GB; chooses the MIG profile.
MEMORY_GB: Final = PREFIX + "memory-gb"
#: Annotation by the user (Training, Inference, Development); label by the webhook, for cost reports.
WORKLOAD_TYPE: Final = PREFIX + "workload-type"
#: Annotation, by the user: "true" asks for a MIG instance, "false" for a whole GPU.
USE_MIG: Final = PREFIX + "use-mig"
#: Annotation or label by the user; label by the webhook (the namespace when none is given).
TEAM: Final = PREFIX + "team"
#: Annotation, by the user: who to bill, recorded in the ledger.
USER: Final = PREFIX + "user"
#: Annotation, by the user: the scheduler extender's policy for this pod (binpack, spread, cost, ...).
PLACEMENT_POLICY: Final = PREFIX + "placement-policy"
#: Annotation, by the user: the reservation (made through the API) the pod claims; pins it to its node.
ALLOCATION_ID: Final = PREFIX + "allocation-id"
#: Label, by the webhook: the GPU resource the pod holds without ``nvidia.com/`` (``gpu``, ``mixed``).
GPU_PROFILE: Final = PREFIX + "gpu-profile"
#: Annotation, by the webhook: the estimated hourly price of what the pod holds.
COST_PER_HOUR: Final = PREFIX + "cost-per-hour"
#: Annotation, by the webhook: the GPU resources the containers asked for before the rewrite (JSON).
ORIGINAL_REQUEST: Final = PREFIX + "original-request"
#: Annotation, by the webhook: why a pod that wanted a MIG instance kept a whole GPU.
MIG_FALLBACK: Final = PREFIX + "mig-fallback-reason"
#: Annotation, by the webhook: the fingerprint of the pod it produced (a match is left alone).
MUTATED: Final = PREFIX + "mutated"
#: Annotation, by the webhook: the admission that counted the pod against its quotas; once the pod shows
#: up in the watch, that admission's assumed hold is dropped (the pod itself counts from then on).
QUOTA_ADMISSION: Final = PREFIX + "quota-admission"
#: Node annotation, by the MIG planner (apply mode): when it last asked for a new layout (RFC 3339),
#: so a new leader keeps the minimum time between two changes of a node.
MIG_CHANGED_AT: Final = PREFIX + "mig-config-changed-at"

# -- NVIDIA's: nvidia.com -------------------------------------------------------------------------

#: Every NVIDIA device plugin resource starts with this.
RESOURCE_PREFIX: Final = "nvidia.com/"
#: Resource, by the device plugin: one whole GPU.
FULL_GPU_RESOURCE: Final = RESOURCE_PREFIX + "gpu"
#: Resource prefix, by the device plugin (mixed MIG strategy): one MIG instance, ``mig-3g.40gb``.
MIG_RESOURCE_PREFIX: Final = RESOURCE_PREFIX + "mig-"
#: Node label, by gpu-feature-discovery: the GPU's product name (``NVIDIA-H100-80GB-HBM3``).
PRODUCT_LABEL: Final = RESOURCE_PREFIX + "gpu.product"
#: Node label, by mig-manager: ``success``, or ``pending``/``rebooting``/``failed`` mid-reconfiguration.
MIG_CONFIG_STATE_LABEL: Final = RESOURCE_PREFIX + "mig.config.state"
#: Node label, for mig-manager: the named mig-parted config the node should have (kgm's MIG planner
#: sets it in apply mode, together with the state ``pending`` until mig-manager takes over).
MIG_CONFIG_LABEL: Final = RESOURCE_PREFIX + "mig.config"
