"""Every rendered object is valid: Kubernetes objects validate strictly against the vendored 1.35
OpenAPI schemas. The Job is the exception the schemas force: ``batch/v1`` is not vendored in
``tests/data/k8s-openapi``, so its pod template is validated as a ``core/v1 PodTemplateSpec`` and the
rest of the Job by hand. Custom resources (ServiceMonitor, PrometheusRule, cert-manager's Issuer and
Certificate) have no schema there either; their required structure is checked by hand."""

from __future__ import annotations

import re

import pytest

from tests.manifests.rendering import (
    VARIANTS,
    Obj,
    key,
    render,
)
from tests.support.k8s_openapi import default_schemas

# batch/v1 JobSpec's fields (k8s.io/api/batch/v1 types.go, 1.35): the Job has no vendored schema.
JOB_SPEC_FIELDS = frozenset(
    {
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "podFailurePolicy",
        "successPolicy",
        "backoffLimit",
        "backoffLimitPerIndex",
        "maxFailedIndexes",
        "selector",
        "manualSelector",
        "template",
        "ttlSecondsAfterFinished",
        "completionMode",
        "suspend",
        "podReplacementPolicy",
        "managedBy",
    }
)
PROMETHEUS_DURATION = re.compile(r"^((\d+)y)?((\d+)w)?((\d+)d)?((\d+)h)?((\d+)m)?((\d+)s)?((\d+)ms)?$")
GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


def check_job(job: Obj) -> None:
    assert job["apiVersion"] == "batch/v1"
    assert set(job) <= {"apiVersion", "kind", "metadata", "spec"}
    default_schemas().validate(job["metadata"], "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
    spec = job["spec"]
    assert set(spec) <= JOB_SPEC_FIELDS, sorted(set(spec) - JOB_SPEC_FIELDS)
    for field in ("backoffLimit", "ttlSecondsAfterFinished"):
        assert isinstance(spec.get(field, 0), int) and spec.get(field, 0) >= 0, field
    default_schemas().validate(spec["template"], "io.k8s.api.core.v1.PodTemplateSpec")
    # A Job's pods may only restart Never or OnFailure (the API server's validation).
    assert spec["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")


def check_service_monitor(monitor: Obj) -> None:
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor["spec"]
    assert spec["selector"]["matchLabels"], "a ServiceMonitor must select its Service"
    assert spec["endpoints"], "no endpoints"
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= {"port", "path", "scheme", "interval", "scrapeTimeout", "tlsConfig"}
        assert endpoint["port"] and endpoint["path"].startswith("/")
        assert endpoint["scheme"] in ("http", "https")
        for field in ("interval", "scrapeTimeout"):
            assert PROMETHEUS_DURATION.match(endpoint[field]), endpoint[field]
        tls = endpoint.get("tlsConfig", {})
        assert set(tls) <= {"serverName", "ca", "insecureSkipVerify"}
        if "ca" in tls:
            assert set(tls["ca"]["secret"]) == {"name", "key"}


def check_prometheus_rule(rule: Obj) -> None:
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    groups = rule["spec"]["groups"]
    assert set(rule["spec"]) == {"groups"}
    names = [g["name"] for g in groups]
    assert len(names) == len(set(names)), "group names must be unique"
    alerts = []
    for group in groups:
        assert set(group) <= {"name", "interval", "rules"}
        for r in group["rules"]:
            assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}, r
            assert r["alert"] and isinstance(r["expr"], str) and r["expr"].strip(), r
            assert PROMETHEUS_DURATION.match(r.get("for", "0s")), r
            assert r["labels"]["severity"] in ("critical", "warning", "info"), r
            assert r["annotations"]["summary"], r
            assert all(isinstance(v, str) for v in [*r["labels"].values(), *r["annotations"].values()])
            alerts.append(r["alert"])
    assert len(alerts) == len(set(alerts)), "alert names must be unique"


def check_issuer(issuer: Obj) -> None:
    assert issuer["apiVersion"] == "cert-manager.io/v1"
    (kind,) = issuer["spec"]
    assert kind in ("selfSigned", "ca")
    if kind == "ca":
        assert set(issuer["spec"]["ca"]) == {"secretName"}


def check_certificate(cert: Obj) -> None:
    assert cert["apiVersion"] == "cert-manager.io/v1"
    spec = cert["spec"]
    allowed = {
        "secretName",
        "commonName",
        "dnsNames",
        "duration",
        "renewBefore",
        "privateKey",
        "usages",
        "issuerRef",
        "isCA",
    }
    assert set(spec) <= allowed, sorted(set(spec) - allowed)
    assert spec["secretName"] and spec["issuerRef"]["name"]
    assert spec["issuerRef"].get("kind", "Issuer") in ("Issuer", "ClusterIssuer")
    for field in ("duration", "renewBefore"):
        assert GO_DURATION.match(spec[field]), spec[field]
    assert set(spec["privateKey"]) <= {"algorithm", "size", "rotationPolicy", "encoding"}
    assert spec["privateKey"]["algorithm"] in ("RSA", "ECDSA", "Ed25519")


HAND_CHECKED = {
    ("batch/v1", "Job"): check_job,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): check_service_monitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): check_prometheus_rule,
    ("cert-manager.io/v1", "Issuer"): check_issuer,
    ("cert-manager.io/v1", "Certificate"): check_certificate,
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_rendered_object_is_valid(variant: str) -> None:
    failures = []
    for obj in render(VARIANTS[variant]):
        check = HAND_CHECKED.get((obj["apiVersion"], obj["kind"]))
        try:
            if check is not None:
                check(obj)
            else:
                default_schemas().validate_resource(obj)
        except (AssertionError, KeyError) as error:
            failures.append(f"{key(obj)}: {error}")
    assert not failures, "\n".join(failures)


def test_hand_checks_cover_exactly_the_kinds_without_a_vendored_schema() -> None:
    schemas = default_schemas()
    for api_version, kind in HAND_CHECKED:
        with pytest.raises(KeyError):
            schemas.schema_name_for(api_version, kind)
