"""Kubernetes name syntax: what the API server accepts as a namespace, an object name or a label value.

Checked on our side too so that a bad name is refused with a message naming the field, before anything
is held or written (apimachinery's ``IsDNS1123Label``, ``IsDNS1123Subdomain``, ``IsValidLabelValue``).
Each pattern is meant for ``fullmatch`` and says nothing of length: the ``*_MAX`` beside it does.
"""

from __future__ import annotations

import re
from typing import Final

#: RFC 1123 label: namespaces, Services, ... (and each dot-separated part of a subdomain).
DNS_LABEL: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_LABEL_MAX: Final = 63
#: RFC 1123 subdomain: the names of most objects, pods among them.
DNS_SUBDOMAIN: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
DNS_SUBDOMAIN_MAX: Final = 253
#: A label value (the API server also accepts an empty one).
LABEL_VALUE: Final = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
LABEL_VALUE_MAX: Final = 63


def is_dns_label(value: str) -> bool:
    return len(value) <= DNS_LABEL_MAX and DNS_LABEL.fullmatch(value) is not None


def is_label_value(value: str) -> bool:
    """A non-empty label value (empty ones are allowed by Kubernetes, but mean nothing to us)."""
    return len(value) <= LABEL_VALUE_MAX and LABEL_VALUE.fullmatch(value) is not None
