"""The price of a share of a GPU: one rule for the ledger, reservations and cost-based placement."""

from __future__ import annotations

from decimal import Decimal

import pytest

from inventory.domain.prices import PriceTable

PRICES = PriceTable(hourly={"H100-80GB": Decimal("3.90"), "free": Decimal(0)})


@pytest.mark.parametrize(
    ("model", "share", "hourly"),
    [
        pytest.param("H100-80GB", 1.0, Decimal("3.900000"), id="a whole GPU"),
        pytest.param("H100-80GB", 3 / 7, Decimal("1.671429"), id="3g of 7 slices, to a millionth"),
        pytest.param("H100-80GB", 1 / 7, Decimal("0.557143"), id="1g of 7 slices"),
        pytest.param("free", 0.5, Decimal("0.000000"), id="a zero price is a price"),
        pytest.param("A100-80GB", 1.0, None, id="a model without a price"),
        pytest.param(None, 1.0, None, id="no model"),
        pytest.param("", 1.0, None, id="an empty model name"),
    ],
)
def test_share_hourly(model: str | None, share: float, hourly: Decimal | None) -> None:
    assert PRICES.share_hourly(model, share) == hourly
