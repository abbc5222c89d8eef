"""Hourly prices: per GPU model, and for a MIG instance its share of the GPU's compute slices.

A MIG instance is priced by compute slices rather than memory because compute is what it takes
away from other tenants: a 3g.40gb on an H100 leaves 4 of 7 compute slices for others, so it costs
3/7 of the GPU, whatever its memory share.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from inventory.domain.catalogue import GpuModel, MigProfile

#: US dollars per GPU-hour, rounded from 2025 on-demand list prices of the large clouds for one GPU
#: of the model. They are a starting point so that cost figures mean something out of the box;
#: every installation should set its own (``--prices FILE``), amortized hardware or contract rates.
DEFAULT_HOURLY_PRICES: Mapping[str, Decimal] = {
    "A30-24GB": Decimal("0.90"),
    "A100-40GB": Decimal("1.80"),
    "A100-80GB": Decimal("2.40"),
    "H100-80GB": Decimal("3.90"),
    "H100-94GB": Decimal("4.30"),
    "H200-141GB": Decimal("4.90"),
    "T4-16GB": Decimal("0.35"),
    "V100-32GB": Decimal("1.20"),
    "A10-24GB": Decimal("0.75"),
    "L4-24GB": Decimal("0.70"),
    "L40S-48GB": Decimal("1.60"),
}


#: A share of a GPU's price is kept to a millionth: 3/7 of a GPU would otherwise carry 28 digits into
#: every allocation the ledger records.
_SHARE_PRICE_QUANTUM = Decimal("0.000001")


class PriceError(ValueError):
    """A price table that cannot be used."""


@dataclass(frozen=True, slots=True)
class PriceTable:
    """Hourly price per GPU model name, in ``currency``."""

    hourly: Mapping[str, Decimal] = field(default_factory=lambda: dict(DEFAULT_HOURLY_PRICES))
    currency: str = "USD"

    def full_gpu(self, model: GpuModel) -> Decimal:
        try:
            return self.hourly[model.name]
        except KeyError:
            raise PriceError(
                f"no hourly price for GPU model {model.name}; add it to the price table"
            ) from None

    def mig_instance(self, model: GpuModel, profile: MigProfile) -> Decimal:
        return self.full_gpu(model) * profile.compute_slices / model.compute_slices_total

    def share_hourly(self, model: str | None, share: float) -> Decimal | None:
        """The hourly price of ``share`` of a GPU of ``model`` (a MIG instance's share of its compute
        slices, as ``NodeShape.resources`` gives it), to a millionth; None for no model or no price."""
        price = self.hourly.get(model) if model else None
        if price is None:
            return None
        return (price * Decimal(str(share))).quantize(_SHARE_PRICE_QUANTUM)

    def with_prices(self, extra: Mapping[str, Decimal]) -> PriceTable:
        return PriceTable(hourly={**self.hourly, **extra}, currency=self.currency)


def parse_price_table(document: Mapping[str, Any], base: PriceTable | None = None) -> PriceTable:
    """A table from ``{currency: USD, hourly: {H100-80GB: 3.9, ...}}``, over ``base`` (the defaults)."""
    base = base if base is not None else PriceTable()
    hourly = document.get("hourly", {})
    if not isinstance(hourly, Mapping):
        raise PriceError("prices: 'hourly' must map GPU model names to prices per GPU-hour")
    parsed = {str(model): parse_price(value, where=f"hourly.{model}") for model, value in hourly.items()}
    currency = str(document.get("currency", base.currency))
    return PriceTable(hourly={**base.hourly, **parsed}, currency=currency)


def parse_price(value: object, *, where: str) -> Decimal:
    """A non-negative decimal from YAML (which may hand us a float, an int or a string)."""
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        raise PriceError(f"{where}: {value!r} is not a number") from None
    if not price.is_finite() or price < 0:
        raise PriceError(f"{where}: a price must be a non-negative number, not {value!r}")
    return price
