"""Kubernetes name syntax: the values each rule accepts and refuses, at the length limits too."""

from __future__ import annotations

import pytest

from inventory.domain.names import (
    DNS_SUBDOMAIN,
    DNS_SUBDOMAIN_MAX,
    LABEL_VALUE,
    is_dns_label,
    is_label_value,
)


@pytest.mark.parametrize(
    ("value", "dns_label", "label_value"),
    [
        pytest.param("ml", True, True, id="plain"),
        pytest.param("a", True, True, id="one character"),
        pytest.param("team-a1", True, True, id="hyphen inside"),
        pytest.param("a" * 63, True, True, id="63 characters"),
        pytest.param("a" * 64, False, False, id="64 characters"),
        pytest.param("", False, False, id="empty"),
        pytest.param("ML", False, True, id="upper case: a label value only"),
        pytest.param("ml_platform", False, True, id="underscore: a label value only"),
        pytest.param("v1.2", False, True, id="dot: a label value only"),
        pytest.param("-ml", False, False, id="leading hyphen"),
        pytest.param("ml-", False, False, id="trailing hyphen"),
        pytest.param("ml platform", False, False, id="space"),
        pytest.param("ml\n", False, False, id="trailing newline"),
    ],
)
def test_dns_labels_and_label_values(value: str, dns_label: bool, label_value: bool) -> None:
    assert (is_dns_label(value), is_label_value(value)) == (dns_label, label_value)


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        pytest.param("train", True, id="a label"),
        pytest.param("a.b-c", True, id="dotted"),
        pytest.param("a..b", False, id="empty part"),
        pytest.param(".a", False, id="leading dot"),
        pytest.param("Train_1", False, id="upper case and underscore"),
    ],
)
def test_dns_subdomains(value: str, valid: bool) -> None:
    assert (DNS_SUBDOMAIN.fullmatch(value) is not None) is valid


def test_the_patterns_leave_length_to_their_limits() -> None:
    assert DNS_SUBDOMAIN.fullmatch("a" * (DNS_SUBDOMAIN_MAX + 1))
    assert LABEL_VALUE.fullmatch("a" * 100)
