"""The cluster description format (YAML): nodes, their GPU models and counts, and MIG layouts.

    models:                     # optional: GPU models the built-in catalogue lacks (no MIG)
      - {name: RTX6000-48GB, memoryGb: 48, productNames: [NVIDIA RTX 6000 Ada Generation]}
    prices:                     # optional: overrides of the default hourly prices
      currency: USD
      hourly: {H100-80GB: 3.50, RTX6000-48GB: 1.10}
    nodes:
      - name: gpu-a1
        labels: {topology.kubernetes.io/zone: eu-1a}    # optional
        gpus:
          - {model: H100-80GB, count: 4}                 # whole GPUs
          - {model: H100-80GB, count: 4, mig: [1g.10gb, 1g.10gb, 2g.20gb, 3g.40gb]}

``mig`` lists the instances on each of the ``count`` GPUs; every layout is checked against NVIDIA's
placement rules. Errors name the node and GPU entry at fault.

    quotas:                     # optional: team quotas that `kgm simulate` enforces at admission
      - team: nlp
        share: 2                # optional: this team's weight in the simulated workload (default 1)
        gpuEquivalents: 8       # each limit optional, as in a GpuQuota's spec.limits:
        memoryGB: 320           #   gpuEquivalents, memoryGB, costPerHour, costPerDay, costPerMonth
        costPerHour: 20

With quotas, each simulated pod belongs to one of their teams (drawn by share, from the run's seed)
and a pod that would take its team past a limit is refused at admission, counted by quota in the
report. `kgm serve --inventory FILE` ignores them (a live cluster's quotas are GpuQuota objects).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from inventory.domain.catalogue import Catalogue, CatalogueError, GpuModel, builtin_catalogue
from inventory.domain.mig_layout import MigLayoutError, place_instances
from inventory.domain.model import ClusterInventory, GpuDevice, NodeInventory, NodeName
from inventory.domain.prices import PriceError, parse_price, parse_price_table
from inventory.domain.quota import QuotaError, TeamQuota, parse_team_quota

DEMO = "demo"


class ClusterFileError(ValueError):
    """A cluster description that cannot be used, with where and why."""


def load_cluster(source: str | Path) -> ClusterInventory:
    """The built-in demo cluster for ``"demo"``, else the cluster described by the YAML file."""
    if str(source) == DEMO:
        text = resources.files("inventory").joinpath("data/demo-cluster.yaml").read_text(encoding="utf-8")
        return parse_cluster(yaml.safe_load(text))
    path = Path(source)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ClusterFileError(f"cannot read cluster file {path}: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise ClusterFileError(f"{path} is not valid YAML: {error}") from error
    try:
        return parse_cluster(document)
    except ClusterFileError as error:
        raise ClusterFileError(f"{path}: {error}") from error


def parse_cluster(document: object, catalogue: Catalogue | None = None) -> ClusterInventory:
    if not isinstance(document, Mapping):
        raise ClusterFileError("a cluster description is a mapping with a 'nodes' list")
    catalogue = catalogue if catalogue is not None else builtin_catalogue()
    extra_models = [
        _parse_model(entry, f"models[{i}]") for i, entry in enumerate(document.get("models") or [])
    ]
    catalogue = catalogue.with_models(model for model, _ in extra_models)
    try:
        prices = parse_price_table(document.get("prices") or {})
    except PriceError as error:
        raise ClusterFileError(f"prices: {error}") from error
    prices = prices.with_prices({m.name: price for m, price in extra_models if price is not None})

    nodes_doc = document.get("nodes")
    if not isinstance(nodes_doc, Sequence) or isinstance(nodes_doc, str) or not nodes_doc:
        raise ClusterFileError("'nodes' must be a non-empty list")
    nodes = tuple(_parse_node(entry, i, catalogue) for i, entry in enumerate(nodes_doc))
    names = [n.name for n in nodes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ClusterFileError(f"node names must be unique; repeated: {', '.join(duplicates)}")
    for node in nodes:
        for gpu in node.gpus:
            try:
                prices.full_gpu(gpu.model)
            except PriceError as error:
                raise ClusterFileError(f"node {node.name}: {error}") from error
    return ClusterInventory(nodes=nodes, catalogue=catalogue, prices=prices, quotas=_parse_quotas(document))


def _parse_quotas(document: Mapping[str, Any]) -> tuple[TeamQuota, ...]:
    entries = document.get("quotas") or []
    if not isinstance(entries, Sequence) or isinstance(entries, str):
        raise ClusterFileError("'quotas' must be a list of team quotas")
    try:
        quotas = tuple(parse_team_quota(entry, f"quotas[{i}]") for i, entry in enumerate(entries))
    except QuotaError as error:
        raise ClusterFileError(str(error)) from error
    teams = [q.quota.team for q in quotas]
    repeated = sorted({str(t) for t in teams if teams.count(t) > 1})
    if repeated:
        raise ClusterFileError(f"quotas: one quota per team; repeated: {', '.join(repeated)}")
    return quotas


def _parse_model(entry: object, where: str) -> tuple[GpuModel, Any]:
    if not isinstance(entry, Mapping) or "name" not in entry or "memoryGb" not in entry:
        raise ClusterFileError(f"{where}: a model needs 'name' and 'memoryGb'")
    memory = entry["memoryGb"]
    if not isinstance(memory, int) or isinstance(memory, bool) or memory <= 0:
        raise ClusterFileError(f"{where}: 'memoryGb' must be a positive integer, not {memory!r}")
    products = entry.get("productNames") or []
    model = GpuModel(name=str(entry["name"]), memory_gb=memory, product_names=tuple(str(p) for p in products))
    price = entry.get("pricePerHour")
    try:
        return model, (None if price is None else parse_price(price, where=f"{where}.pricePerHour"))
    except PriceError as error:
        raise ClusterFileError(str(error)) from error


def _parse_node(entry: object, position: int, catalogue: Catalogue) -> NodeInventory:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str) or not entry["name"]:
        raise ClusterFileError(f"nodes[{position}]: a node needs a 'name'")
    name = entry["name"]
    labels = entry.get("labels") or {}
    if not isinstance(labels, Mapping):
        raise ClusterFileError(f"node {name}: 'labels' must be a mapping")
    gpus: list[GpuDevice] = []
    for i, group in enumerate(entry.get("gpus") or []):
        gpus.extend(_parse_gpu_group(group, f"node {name}, gpus[{i}]", catalogue, first_index=len(gpus)))
    return NodeInventory(
        name=NodeName(name), gpus=tuple(gpus), labels={str(k): str(v) for k, v in labels.items()}
    )


def _parse_gpu_group(group: object, where: str, catalogue: Catalogue, *, first_index: int) -> list[GpuDevice]:
    if not isinstance(group, Mapping) or "model" not in group:
        raise ClusterFileError(f"{where}: each GPU entry needs a 'model'")
    try:
        model = catalogue.model(str(group["model"]))
    except CatalogueError as error:
        raise ClusterFileError(f"{where}: {error}") from error
    count = group.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ClusterFileError(f"{where}: 'count' must be a positive integer, not {count!r}")
    mig = group.get("mig") or []
    if not isinstance(mig, Sequence) or isinstance(mig, str):
        raise ClusterFileError(f"{where}: 'mig' must be a list of MIG profile names")
    try:
        instances = place_instances(model, [str(p) for p in mig]) if mig else ()
    except MigLayoutError as error:
        raise ClusterFileError(f"{where}: {error}") from error
    return [
        GpuDevice(index=first_index + i, model=model, mig_enabled=bool(mig), mig_instances=instances)
        for i in range(count)
    ]
