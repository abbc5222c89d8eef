"""Which callers a route that requires a client certificate lets through, by the ASGI TLS extension."""

from __future__ import annotations

from typing import Any

import pytest

from kgm.certs import make_ca, make_client_cert
from kgm.web.client_cert import ClientCertRule

CA = make_ca(common_name="client CA")
SCHEDULER = make_client_cert(ca=CA, common_name="kgm-scheduler").cert_pem.decode()
OTHER = make_client_cert(ca=CA, common_name="kgm-scheduler-2").cert_pem.decode()


def scope(tls: Any = None, *, extensions: bool = True) -> dict[str, Any]:
    base: dict[str, Any] = {"type": "http", "path": "/extender/filter"}
    return {**base, "extensions": {"tls": tls}} if extensions else base


@pytest.mark.parametrize(
    ("names", "request_scope", "refused"),
    [
        ((), scope(extensions=False), 401),  # served without the TLS extension: fail closed
        ((), scope(None), 401),
        ((), scope("not a mapping"), 401),
        ((), scope({"client_cert_chain": ()}), 401),  # TLS, no certificate
        ((), scope({"client_cert_chain": (SCHEDULER,)}), None),  # any certificate of the CAs
        (("kgm-scheduler",), scope({"client_cert_chain": (SCHEDULER,)}), None),
        (("kgm-scheduler",), scope({"client_cert_chain": (OTHER,)}), 403),  # no prefix match
        (("a", "kgm-scheduler-2"), scope({"client_cert_chain": (OTHER,)}), None),
        (("kgm-scheduler",), scope({"client_cert_chain": ()}), 401),
    ],
)
def test_a_rule_refuses_with_401_without_a_certificate_and_403_for_another_name(
    names: tuple[str, ...], request_scope: dict[str, Any], refused: int | None
) -> None:
    answer = ClientCertRule(names=names).refusal(request_scope)
    assert (answer[0] if answer else None) == refused
