"""Every metric that the alert rules and the Grafana dashboard query is one that kgm exports, with the
labels they use; and every expression is PromQL that parses.

What is exported is read from the real app, not from a list: `kgm serve`'s parts over the demo
cluster (`kgm.server.assembled_app` on a fresh CollectorRegistry), after
one admission review, one extender filter call and one REST API call, then the text exposition
(`generate_latest`). Families without samples yet (a labelled counter nobody has incremented) still
count through their HELP/TYPE lines. A counter `x` is queried as `x_total`, a histogram `h` as
`h_bucket`, `h_sum`, `h_count`; `up` is Prometheus' own.

Parsing uses `promql-parser` (a Rust PromQL parser, compatible with Prometheus 2.45) where it is
installed, and always a small tokenizer of our own (balanced brackets, known functions, metric
names outside label matchers and grouping lists) whose metric names must agree with the parser's.
Without `promql-parser` the parser half skips locally and fails in CI.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kgm.server import assembled_app
from kgm.settings import ServeSettings
from tests.support.data import K8S_FIXTURES, REPO

RULES = REPO / "manifests" / "monitoring" / "prometheus-rule.yaml"
DASHBOARD = REPO / "manifests" / "monitoring" / "kgm-dashboard.json"
REVIEW = REPO / "examples" / "admissionreview-inference-pod.json"
FILTER_ARGS = K8S_FIXTURES / "extender-filter-args-nodecache.json"

#: Labels Prometheus adds to every scraped series (target labels of a ServiceMonitor scrape).
TARGET_LABELS = frozenset({"job", "instance", "namespace", "service", "pod", "container", "endpoint"})
#: Prometheus' own series, not ours.
PROMETHEUS_METRICS = {"up": frozenset({"job", "instance"})}

#: The label values that the code writes (kgm/web/metrics.py help texts and their callers).
KNOWN_VALUES = {
    ("kgm_admission_requests_total", "outcome"): {"mutated", "unchanged", "denied", "bad_request", "error"},
    ("kgm_extender_requests_total", "outcome"): {"ok", "refused", "invalid", "bad_request", "error"},
    ("kgm_extender_requests_total", "verb"): {"filter", "prioritize", "bind", "preempt"},
    ("kgm_extender_duration_seconds_bucket", "verb"): {"filter", "prioritize", "bind", "preempt"},
}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


# ---------------------------------------------------------------------------- what is exported


@functools.cache
def exposition() -> str:
    registry = CollectorRegistry()
    settings = ServeSettings(inventory="demo")
    app, parts = assembled_app(settings, registry)

    async def exercise() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://kgm") as client:
            assert (await client.post("/mutate", content=REVIEW.read_bytes())).status_code == 200
            assert (
                await client.post("/extender/filter", content=FILTER_ARGS.read_bytes())
            ).status_code == 200
            assert (await client.get("/api/v1/gpu/overview")).status_code == 401  # no token: still counted

    try:
        asyncio.run(exercise())
        return generate_latest(registry).decode()  # before close: the ledger's gauges read the ledger
    finally:
        parts.stop.set()
        parts.close()


@functools.cache
def exported() -> dict[str, frozenset[str]]:
    """Queryable series name -> its label names, from the exposition."""
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition()):
        if family.name.endswith("_created"):
            continue  # prometheus_client's creation timestamps: never queried
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        for suffix in suffixes:
            names.setdefault(family.name + suffix, set())
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    # Labelled families with no sample yet: their label names come from the code's declarations.
    declared = {
        "kgm_admission_requests_total": {"operation", "outcome"},
        "kgm_extender_requests_total": {"verb", "outcome"},
        "kgm_extender_duration_seconds_bucket": {"verb", "le"},
        "kgm_api_requests_total": {"route", "method", "status"},
        "gpu_quota_used": {"kind", "quota_namespace", "quota", "team", "unit"},
        "gpu_quota_limit": {"kind", "quota_namespace", "quota", "team", "unit"},
    }
    for name, labels in declared.items():
        assert name in names, f"{name} is not exported at all"
        names[name].update(labels)
    return {name: frozenset(labels) | TARGET_LABELS for name, labels in names.items()} | PROMETHEUS_METRICS


def test_the_app_exports_the_metrics_the_issue_names() -> None:
    for name in (
        "gpu_temperature_celsius",
        "gpu_utilization_percent",
        "gpu_memory_used_bytes",
        "gpu_memory_total_bytes",
        "gpu_device_unhealthy",
        "gpu_node_inventory_age_seconds",
        "gpu_mig_instances_total",
        "gpu_mig_instances_available",
        "gpu_mig_instances_allocated",
        "gpu_allocations_active",
        "gpu_reservations_active",
        "gpu_cost_per_hour",
        "gpu_daily_cost",
        "gpu_cost_total",
        "gpu_allocation_failures_total",
        "kgm_allocations_over_limit",
        "kgm_reservations_stale",
        "kgm_reconcile_errors_total",
        "kgm_ledger_write_seconds_bucket",
        "kgm_admission_requests_total",
        "kgm_admission_duration_seconds_bucket",
        "kgm_extender_requests_total",
        "kgm_extender_duration_seconds_bucket",
        "kgm_api_requests_total",
        "gpu_quota_used",
        "gpu_quota_limit",
    ):
        assert name in exported(), name
    assert {"gpu", "UUID", "modelName", "Hostname"} <= exported()["gpu_temperature_celsius"]
    assert "reason" in exported()["gpu_device_unhealthy"]
    assert {"Hostname", "GPU_I_PROFILE"} <= exported()["gpu_mig_instances_available"]


# ------------------------------------------------------------------------------ what is queried


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["spec"]["groups"] for rule in group["rules"]]


GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$node": ".*"}


def grafana_to_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"an unknown Grafana variable in {expr!r}"
    return expr


def dashboard_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from dashboard_panels(panel.get("panels", []))


def queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every alert rule and every dashboard target."""
    found = [(f"alert {rule['alert']}", rule["expr"]) for rule in rules()]
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            found.append((f"panel {panel['title']!r} {target['refId']}", grafana_to_promql(target["expr"])))
    return found


def variable_metrics() -> list[tuple[str, str]]:
    """(variable, metric) of the dashboard's label_values(...) template variables."""
    found = []
    for variable in json.loads(DASHBOARD.read_text())["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
            assert match, f"variable {variable['name']}: {query!r} is not label_values(metric, label)"
            found.append((variable["name"], match.group(1)))
            assert match.group(2) in exported()[match.group(1)]
    return found


QUERIES = queries()


def test_there_are_queries_to_check() -> None:
    assert len([w for w, _ in QUERIES if w.startswith("alert")]) >= 10
    assert len([w for w, _ in QUERIES if w.startswith("panel")]) >= 10


# ------------------------------------------------------------------------ the tokenizer (always)

FUNCTIONS = frozenset(
    {
        "abs", "absent", "absent_over_time", "avg_over_time", "ceil", "changes", "clamp", "clamp_max",
        "clamp_min", "count_over_time", "day_of_month", "day_of_week", "delta", "deriv", "exp", "floor",
        "histogram_quantile", "holt_winters", "hour", "idelta", "increase", "irate", "label_join",
        "label_replace", "last_over_time", "ln", "log2", "log10", "max_over_time", "min_over_time",
        "minute", "month", "predict_linear", "present_over_time", "quantile_over_time", "rate", "resets",
        "round", "scalar", "sort", "sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time",
        "sum_over_time", "time", "timestamp", "vector", "year",
    }
)  # fmt: skip
AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
     "quantile"}
)  # fmt: skip
KEYWORDS = frozenset({"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
                      "bool", "offset"})  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_RANGE = re.compile(r"\[[0-9smhdwy:]+\]")
_TOKEN = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*|\d+(\.\d+)?(e[+-]?\d+)?|\S")


def check_brackets(expr: str) -> None:
    stack = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for char in _STRING.sub('""', expr):
        if char in "([{":
            stack.append(char)
        elif char in pairs:
            assert stack and stack.pop() == pairs[char], f"unbalanced {char!r} in {expr!r}"
    assert not stack, f"unclosed {stack} in {expr!r}"


def tokenizer_metric_names(expr: str) -> set[str]:
    """Metric names of `expr`: identifiers outside strings, {matchers} and grouping lists that are not
    functions, aggregations or keywords. Functions must be PromQL's."""
    check_brackets(expr)
    text = _STRING.sub('""', expr)
    text = _GROUPING.sub(" ", text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    tokens = [m.group(0) for m in _TOKEN.finditer(text)]
    names = set()
    for i, token in enumerate(tokens):
        if not re.match(r"[A-Za-z_:]", token):
            continue
        called = i + 1 < len(tokens) and tokens[i + 1] == "("
        if called:
            assert token in FUNCTIONS | AGGREGATIONS, f"unknown function {token}() in {expr!r}"
        elif token not in KEYWORDS and not re.fullmatch(r"\d+[smhdwy]", token):
            names.add(token)
    return names


def selector_labels(expr: str) -> list[tuple[str, str, str]]:
    """(metric, label, value) of every matcher in `expr`, by regex: `metric{label op "value", ...}`."""
    found = []
    for match in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)\{([^{}]*)\}", expr):
        for label, value in re.findall(
            r'([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*"([^"]*)"', match.group(2)
        ):
            found.append((match.group(1), label, value))
    return found


@pytest.mark.parametrize(("where", "expr"), QUERIES, ids=[w for w, _ in QUERIES])
def test_every_queried_metric_is_exported(where: str, expr: str) -> None:
    names = tokenizer_metric_names(expr)
    assert names, f"{where}: no metric in {expr!r}"
    missing = sorted(names - set(exported()))
    assert not missing, f"{where}: {missing} are not exported by kgm (exported: {sorted(exported())})"


@pytest.mark.parametrize(("where", "expr"), QUERIES, ids=[w for w, _ in QUERIES])
def test_every_matched_label_exists_with_a_value_the_code_writes(where: str, expr: str) -> None:
    for metric, label, value in selector_labels(expr):
        assert label in exported()[metric], f"{where}: {metric} has no label {label!r}"
        known = KNOWN_VALUES.get((metric, label))
        if known is not None:
            alternatives = set(value.split("|"))
            assert alternatives <= known, (
                f"{where}: {metric}{{{label}}} is never {sorted(alternatives - known)}"
            )


@pytest.mark.parametrize(("where", "expr"), QUERIES, ids=[w for w, _ in QUERIES])
def test_every_grouping_label_is_a_label_of_the_metrics_grouped(where: str, expr: str) -> None:
    labels = set().union(*(exported()[name] for name in tokenizer_metric_names(expr)))
    for match in re.finditer(r"\b(?:by|without)\s*\(([^()]*)\)", expr):
        for label in (part.strip() for part in match.group(1).split(",")):
            assert label in labels | {"le"}, f"{where}: grouping by {label!r}, which none of its metrics has"


def test_the_dashboard_variables_query_exported_metrics() -> None:
    assert variable_metrics() == [("node", "gpu_node_inventory_age_seconds")]


def test_the_tokenizer_finds_metrics_and_rejects_what_is_not_promql() -> None:
    expr = 'sum by (le, verb) (rate(kgm_extender_duration_seconds_bucket{verb=~"filter|x"}[5m])) > 0.1'
    assert tokenizer_metric_names(expr) == {"kgm_extender_duration_seconds_bucket"}
    assert tokenizer_metric_names('sum(up{job="kgm"}) == 0 or absent(up{job="kgm"})') == {"up"}
    with pytest.raises(AssertionError, match="unbalanced"):
        tokenizer_metric_names("sum(rate(x[5m])))")
    with pytest.raises(AssertionError, match="unknown function"):
        tokenizer_metric_names("summ(x)")


# --------------------------------------------------------------------- the parser (promql-parser)


def promql_parser() -> Any:
    try:
        import promql_parser as parser  # noqa: PLC0415
    except ImportError:
        reason = "promql-parser is not installed (pip install promql-parser)"
        if in_ci():
            pytest.fail(f"{reason}; CI is set, so the expressions must be parsed, not skipped", pytrace=False)
        pytest.skip(reason)
    return parser


def parser_metric_names(parser: Any, expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node: Any) -> bool:
        if isinstance(node, parser.MatrixSelector):
            node = node.vector_selector
        if isinstance(node, parser.VectorSelector):
            assert node.name, f"a selector without a metric name in {expr!r}"
            names.add(node.name)
        return True

    parser.walk(parser.parse(expr), visit)
    return names


@pytest.mark.parametrize(("where", "expr"), QUERIES, ids=[w for w, _ in QUERIES])
def test_every_expression_parses_and_the_tokenizer_agrees(where: str, expr: str) -> None:
    parser = promql_parser()
    try:
        names = parser_metric_names(parser, expr)
    except ValueError as error:
        raise AssertionError(f"{where}: does not parse: {error}\n{expr}") from None
    assert names == tokenizer_metric_names(expr), where


def test_the_parser_rejects_what_prometheus_rejects() -> None:
    parser = promql_parser()
    for bad in ("sum(rate(x[5m])", "rate(x)", "x{a=}", "histogram_quantile(x)"):
        with pytest.raises(ValueError):
            parser.parse(bad)
