"""The review every request sends: the Pod CREATE fixture, asking for a GPU that moves it to MIG."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import orjson

from benchmarks.webhook.common import REPO, BenchmarkError

FIXTURE = Path("k8s", "admissionreview-pod-create.json")
# The copy under tests/data (the repository keeps the fixtures the tests read).
FIXTURE_CANDIDATES = (REPO / "tests" / "data" / FIXTURE,)
GPU_ANNOTATIONS = {"gpu.kgm.io/memory-gb": "18", "gpu.kgm.io/workload-type": "Inference"}
GPU_RESOURCES = {
    "limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
    "requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
}


def load_review() -> tuple[dict[str, Any], str]:
    """The real Pod CREATE fixture from tests/data when present, else the embedded copy of it."""
    for path in FIXTURE_CANDIDATES:
        if path.is_file():
            return orjson.loads(path.read_bytes()), str(path)
    return copy.deepcopy(EMBEDDED_REVIEW), "embedded copy of the pod-create fixture"


def gpu_review_body(review: dict[str, Any]) -> bytes:
    """The review with its first container asking for one GPU, sized so that it moves to MIG."""
    pod = review["request"]["object"]
    metadata = pod.setdefault("metadata", {})
    metadata["annotations"] = {**(metadata.get("annotations") or {}), **GPU_ANNOTATIONS}
    pod["spec"]["containers"][0]["resources"] = copy.deepcopy(GPU_RESOURCES)
    # Compact, as the API server sends it.
    return orjson.dumps(review)


#: A label whose value each "mutate miss" request changes (the decision reads labels): 9 digits in
#: place of these zeros, so every such review is new to the memo and all have the same length.
SEQUENCE_LABEL = "kgm-bench/sequence"
_ZEROS = "000000000"


def split_for_sequence(review: dict[str, Any]) -> tuple[bytes, bytes]:
    """The body of ``gpu_review_body(review)`` with the sequence label, cut where its digits go."""
    review = copy.deepcopy(review)
    metadata = review["request"]["object"].setdefault("metadata", {})
    metadata["labels"] = {**(metadata.get("labels") or {}), SEQUENCE_LABEL: _ZEROS}
    body = gpu_review_body(review)
    marker = orjson.dumps({SEQUENCE_LABEL: _ZEROS})[1:-1]
    before, found, after = body.partition(marker)
    if not found:
        raise BenchmarkError("the sequence label is not in the review body")
    return before + marker[: -len(_ZEROS) - 1], b'"' + after


def check_mutated(body: bytes) -> None:
    """Abort unless /mutate answered an allow with a patch that moves the pod to a MIG profile."""
    try:
        response = orjson.loads(body).get("response") or {}
        patch = orjson.loads(base64.b64decode(response.get("patch") or ""))
    except (ValueError, AttributeError) as error:
        raise BenchmarkError(f"/mutate answered something unexpected ({error}): {body[:400]!r}") from error
    paths = [op.get("path", "") for op in patch if isinstance(op, dict)] if isinstance(patch, list) else []
    if response.get("allowed") is not True or not any("nvidia.com~1mig-" in path for path in paths):
        raise BenchmarkError(f"/mutate did not move the GPU pod to a MIG profile: {body[:400]!r}")


# A copy of tests/data/k8s/admissionreview-pod-create.json (a Job's pod as kube-apiserver sends
# it, managedFields included), so the benchmark runs without the tests' data and with a body of the same size.
EMBEDDED_REVIEW: dict[str, Any] = {
    "kind": "AdmissionReview",
    "apiVersion": "admission.k8s.io/v1",
    "request": {
        "uid": "d6a4f0b2-7c1e-4e39-8f52-0a9b6c3d2e1f",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
        "requestResource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "ml-training",
        "operation": "CREATE",
        "userInfo": {
            "username": "system:serviceaccount:kube-system:job-controller",
            "uid": "b1f4e2c3-5d6a-4b7c-8e9f-0a1b2c3d4e5f",
            "groups": [
                "system:serviceaccounts",
                "system:serviceaccounts:kube-system",
                "system:authenticated",
            ],
            "extra": {
                "authentication.kubernetes.io/credential-id": ["JTI=5e2f7c1a-9b3d-4e8f-a6c0-2d4b6f8a0c1e"]
            },
        },
        "object": {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {
                "generateName": "llama3-finetune-",
                "namespace": "ml-training",
                "labels": {
                    "app.kubernetes.io/name": "llama3-finetune",
                    "batch.kubernetes.io/controller-uid": "8f0c2d4e-6a1b-4c3d-9e5f-7a8b9c0d1e2f",
                    "batch.kubernetes.io/job-name": "llama3-finetune",
                    "controller-uid": "8f0c2d4e-6a1b-4c3d-9e5f-7a8b9c0d1e2f",
                    "job-name": "llama3-finetune",
                },
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": "llama3-finetune",
                        "uid": "8f0c2d4e-6a1b-4c3d-9e5f-7a8b9c0d1e2f",
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
                "finalizers": ["batch.kubernetes.io/job-tracking"],
                "managedFields": [
                    {
                        "manager": "kube-controller-manager",
                        "operation": "Update",
                        "apiVersion": "v1",
                        "time": "2025-06-12T09:14:03Z",
                        "fieldsType": "FieldsV1",
                        "fieldsV1": {
                            "f:metadata": {
                                "f:finalizers": {".": {}, 'v:"batch.kubernetes.io/job-tracking"': {}},
                                "f:generateName": {},
                                "f:labels": {
                                    ".": {},
                                    "f:app.kubernetes.io/name": {},
                                    "f:batch.kubernetes.io/controller-uid": {},
                                    "f:batch.kubernetes.io/job-name": {},
                                    "f:controller-uid": {},
                                    "f:job-name": {},
                                },
                                "f:ownerReferences": {
                                    ".": {},
                                    'k:{"uid":"8f0c2d4e-6a1b-4c3d-9e5f-7a8b9c0d1e2f"}': {},
                                },
                            },
                            "f:spec": {
                                "f:containers": {
                                    'k:{"name":"trainer"}': {
                                        ".": {},
                                        "f:args": {},
                                        "f:command": {},
                                        "f:env": {
                                            ".": {},
                                            'k:{"name":"HF_HOME"}': {".": {}, "f:name": {}, "f:value": {}},
                                            'k:{"name":"NCCL_DEBUG"}': {".": {}, "f:name": {}, "f:value": {}},
                                        },
                                        "f:image": {},
                                        "f:imagePullPolicy": {},
                                        "f:name": {},
                                        "f:resources": {
                                            ".": {},
                                            "f:limits": {
                                                ".": {},
                                                "f:cpu": {},
                                                "f:memory": {},
                                                "f:nvidia.com/gpu": {},
                                            },
                                            "f:requests": {
                                                ".": {},
                                                "f:cpu": {},
                                                "f:memory": {},
                                                "f:nvidia.com/gpu": {},
                                            },
                                        },
                                        "f:terminationMessagePath": {},
                                        "f:terminationMessagePolicy": {},
                                        "f:volumeMounts": {
                                            ".": {},
                                            'k:{"mountPath":"/dev/shm"}': {
                                                ".": {},
                                                "f:mountPath": {},
                                                "f:name": {},
                                            },
                                        },
                                    }
                                },
                                "f:dnsPolicy": {},
                                "f:enableServiceLinks": {},
                                "f:restartPolicy": {},
                                "f:schedulerName": {},
                                "f:securityContext": {},
                                "f:terminationGracePeriodSeconds": {},
                                "f:tolerations": {},
                                "f:volumes": {
                                    ".": {},
                                    'k:{"name":"dshm"}': {
                                        ".": {},
                                        "f:emptyDir": {".": {}, "f:medium": {}, "f:sizeLimit": {}},
                                        "f:name": {},
                                    },
                                },
                            },
                        },
                    }
                ],
            },
            "spec": {
                "volumes": [
                    {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Gi"}},
                    {
                        "name": "kube-api-access-5xq8z",
                        "projected": {
                            "sources": [
                                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                                {
                                    "configMap": {
                                        "name": "kube-root-ca.crt",
                                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                                    }
                                },
                                {
                                    "downwardAPI": {
                                        "items": [
                                            {
                                                "path": "namespace",
                                                "fieldRef": {
                                                    "apiVersion": "v1",
                                                    "fieldPath": "metadata.namespace",
                                                },
                                            }
                                        ]
                                    }
                                },
                            ],
                            "defaultMode": 420,
                        },
                    },
                ],
                "containers": [
                    {
                        "name": "trainer",
                        "image": "nvcr.io/nvidia/pytorch:24.08-py3",
                        "command": ["torchrun"],
                        "args": [
                            "--nproc_per_node=2",
                            "train.py",
                            "--config=/workspace/configs/llama3-8b-lora.yaml",
                        ],
                        "env": [
                            {"name": "NCCL_DEBUG", "value": "WARN"},
                            {"name": "HF_HOME", "value": "/workspace/.cache/huggingface"},
                        ],
                        "resources": {
                            "limits": {"cpu": "32", "memory": "256Gi", "nvidia.com/gpu": "2"},
                            "requests": {"cpu": "16", "memory": "128Gi", "nvidia.com/gpu": "2"},
                        },
                        "volumeMounts": [
                            {"name": "dshm", "mountPath": "/dev/shm"},
                            {
                                "name": "kube-api-access-5xq8z",
                                "readOnly": True,
                                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                            },
                        ],
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File",
                        "imagePullPolicy": "IfNotPresent",
                    }
                ],
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 30,
                "dnsPolicy": "ClusterFirst",
                "serviceAccountName": "default",
                "serviceAccount": "default",
                "securityContext": {},
                "schedulerName": "default-scheduler",
                "tolerations": [
                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                    {
                        "key": "node.kubernetes.io/not-ready",
                        "operator": "Exists",
                        "effect": "NoExecute",
                        "tolerationSeconds": 300,
                    },
                    {
                        "key": "node.kubernetes.io/unreachable",
                        "operator": "Exists",
                        "effect": "NoExecute",
                        "tolerationSeconds": 300,
                    },
                ],
                "priority": 0,
                "enableServiceLinks": True,
                "preemptionPolicy": "PreemptLowerPriority",
            },
            "status": {},
        },
        "oldObject": None,
        "dryRun": False,
        "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
    },
}
