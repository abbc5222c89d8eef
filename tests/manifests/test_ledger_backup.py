"""Nightly ledger backups are opt-in: the component manifests/components/ledger-backup adds a CronJob
running `kgm ledger backup` (a command line kgm's own parser takes) with the controller's image, user
and ledger Secret, the PersistentVolumeClaim it writes to and a NetworkPolicy; nothing else changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from kgm.cli import _parser
from tests.manifests.rendering import (
    INSTALL,
    MANIFESTS,
    Obj,
    container,
    env_of,
    find,
    key,
    of_kind,
    pod_spec,
    render,
)
from tests.support.k8s_openapi import default_schemas

LEDGER_BACKUP = MANIFESTS / "overlays" / "ledger-backup"
NS = "kgm-system"
NAME = "kgm-ledger-backup"
COMPONENT_OBJECTS = {
    ("CronJob", NS, NAME),
    ("PersistentVolumeClaim", NS, "kgm-ledger-backups"),
    ("NetworkPolicy", NS, NAME),
}
# batch/v1 CronJobSpec's fields (k8s.io/api/batch/v1 types.go): no vendored schema for batch/v1.
CRONJOB_SPEC_FIELDS = {
    "schedule", "timeZone", "startingDeadlineSeconds", "concurrencyPolicy", "suspend", "jobTemplate",
    "successfulJobsHistoryLimit", "failedJobsHistoryLimit",
}  # fmt: skip


def cronjob() -> Obj:
    return find(render(LEDGER_BACKUP), "CronJob", NAME)


def backup_pod() -> Obj:
    template: Obj = cronjob()["spec"]["jobTemplate"]["spec"]["template"]
    return template


def controller() -> Obj:
    return find(render(LEDGER_BACKUP), "Deployment", "kgm")


def test_the_overlay_is_the_install_with_the_component_and_nothing_else_changed() -> None:
    install = {key(o): o for o in render(INSTALL)}
    overlay = {key(o): o for o in render(LEDGER_BACKUP)}
    assert set(overlay) == set(install) | COMPONENT_OBJECTS
    assert all(overlay[k] == obj for k, obj in install.items())


def test_the_command_is_a_kgm_ledger_backup_into_the_mounted_claim_with_rotation() -> None:
    (c,) = backup_pod()["spec"]["containers"]
    program, *argv = c["command"]
    args = _parser({}).parse_args(argv)
    assert (program, args.command, args.ledger_command) == ("kgm", "ledger", "backup")
    assert (args.format, args.keep, args.ledger) == ("jsonl", 14, None)  # the ledger: $KGM_LEDGER
    (mount,) = c["volumeMounts"]
    assert Path(mount["mountPath"]) == args.to
    (volume,) = backup_pod()["spec"]["volumes"]
    assert volume == {"name": mount["name"], "persistentVolumeClaim": {"claimName": "kgm-ledger-backups"}}


def test_it_runs_as_the_controller_does_with_its_image_user_and_ledger_secret() -> None:
    (c,) = backup_pod()["spec"]["containers"]
    serve = container(controller(), "kgm")
    assert c["image"] == serve["image"]
    assert c["securityContext"] == serve["securityContext"]
    assert backup_pod()["spec"]["securityContext"] == pod_spec(controller())["securityContext"]
    assert env_of(c)["KGM_LEDGER"] == env_of(serve)["KGM_LEDGER"]
    assert backup_pod()["spec"]["automountServiceAccountToken"] is False


def test_one_backup_at_a_time_and_a_failure_is_a_failed_job() -> None:
    spec = cronjob()["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert backup_pod()["spec"]["restartPolicy"] == "Never"
    assert spec["jobTemplate"]["spec"]["backoffLimit"] >= 1


def test_only_its_network_policy_selects_its_pods_and_no_service_sends_them_traffic() -> None:
    objs = render(LEDGER_BACKUP)
    labels = backup_pod()["metadata"]["labels"].items()
    selecting = [
        p["metadata"]["name"]
        for p in of_kind(objs, "NetworkPolicy")
        if p["spec"]["podSelector"]["matchLabels"].items() <= labels
    ]
    assert selecting == [NAME]
    policy = find(objs, "NetworkPolicy", NAME)["spec"]
    assert "Ingress" in policy["policyTypes"] and not policy.get("ingress")
    assert {p["port"] for rule in policy["egress"] for p in rule["ports"]} == {53, 5432}
    for service in of_kind(objs, "Service"):
        assert not service["spec"].get("selector", {}).items() <= labels, service["metadata"]["name"]


@pytest.mark.parametrize(
    ("kind", "schema"),
    [
        ("PersistentVolumeClaim", "io.k8s.api.core.v1.PersistentVolumeClaim"),
        ("NetworkPolicy", "io.k8s.api.networking.v1.NetworkPolicy"),
    ],
)
def test_the_component_objects_are_valid(kind: str, schema: str) -> None:
    (obj,) = [o for o in of_kind(render(LEDGER_BACKUP), kind) if key(o) in COMPONENT_OBJECTS]
    default_schemas().validate(obj, schema)


def test_the_cronjob_is_valid() -> None:
    job = cronjob()
    assert job["apiVersion"] == "batch/v1"
    assert set(job["spec"]) <= CRONJOB_SPEC_FIELDS, sorted(set(job["spec"]) - CRONJOB_SPEC_FIELDS)
    assert len(job["spec"]["schedule"].split()) == 5
    default_schemas().validate(job["metadata"], "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
    default_schemas().validate(backup_pod(), "io.k8s.api.core.v1.PodTemplateSpec")
