"""The ``k8s.io/kube-scheduler/extender/v1`` wire format: parse the calls, write the replies.

The Go structs have no JSON tags, so kube-scheduler writes the Go field names (``Pod``, ``NodeNames``,
``NumPDBViolations``...) and nil pointers as ``null``; it reads replies with ``encoding/json``, which
matches keys case-insensitively (``types_test.go`` ``TestCompatibility`` round-trips lower-cased JSON).
So we read keys in any case and always write the Go names. The Kubernetes objects inside (Pod, Node)
have JSON tags and pass through untouched.

Two failure families: :class:`MalformedBodyError` (not JSON, not an object: HTTP 400) and plain
:class:`WireError` (a readable call with unusable content: the verb's reply carries ``Error``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

import orjson

from extender.service import FilterOutcome, Victims
from inventory.domain.bounded import BoundedDict

MAX_SCORE = 10  # kube-scheduler's MaxExtenderPriority
INTERNAL_ERROR = "internal error in the GPU extender: see its logs"


#: Text that needs no escaping inside a JSON string.
_JSON_SAFE = re.compile(r'[^"\\\x00-\x1f]*')


class WireError(ValueError):
    """A body that is not a usable extender call."""


class MalformedBodyError(WireError):
    """Not JSON, or not a JSON object: the caller's bug, answered with HTTP 400."""


class NodeList(TypedDict):
    metadata: dict[str, Any]
    items: list[dict[str, Any]]


class ExtenderFilterResult(TypedDict):
    Nodes: NodeList | None
    NodeNames: list[str] | None
    FailedNodes: dict[str, str] | None
    FailedAndUnresolvableNodes: dict[str, str] | None
    Error: str


class HostPriority(TypedDict):
    Host: str
    Score: int


class ExtenderBindingResult(TypedDict):
    Error: str


class MetaPod(TypedDict):
    UID: str


class MetaVictims(TypedDict):
    Pods: list[MetaPod] | None
    NumPDBViolations: int


class ExtenderPreemptionResult(TypedDict):
    NodeNameToMetaVictims: dict[str, MetaVictims] | None
    # Not a field of the Go struct: kube-scheduler ignores it. Only our error replies carry it, for humans.
    Error: NotRequired[str]


@dataclass(frozen=True, slots=True)
class ExtenderCall:
    """A filter or prioritize call. ``nodes`` holds the full Node objects when they were sent."""

    pod: dict[str, Any]
    node_names: list[str]
    nodes: list[dict[str, Any]] | None
    node_cache_capable: bool

    @property
    def pod_ref(self) -> str:
        return pod_ref(self.pod)


@dataclass(frozen=True, slots=True)
class BindingCall:
    namespace: str
    name: str
    uid: str
    node: str

    @property
    def pod_ref(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class PreemptionCall:
    pod: dict[str, Any]
    victims: dict[str, Victims]
    #: The call sent whole victim pods (NodeNameToVictims: not nodeCacheCapable).
    full_victims: bool

    @property
    def pod_ref(self) -> str:
        return pod_ref(self.pod)


def field(obj: Mapping[str, Any], name: str) -> Any:
    """``obj[name]`` matched as Go's encoding/json does, None when absent.

    The exact key first: kube-scheduler writes the Go names, so the scan is the rare path. Go lets the
    last of several case variants win; we prefer the exact one (kube-scheduler never sends both).
    """
    value = obj.get(name)
    if value is not None or name in obj:
        return value
    folded = name.casefold()  # casefold, like Go's fold, maps the Kelvin sign to k and long s to s
    for key, value in obj.items():
        if key.casefold() == folded:
            return value
    return None


def pod_ref(pod: Mapping[str, Any]) -> str:
    """``namespace/name`` of a pod, for logs."""
    metadata = pod.get("metadata")
    if not isinstance(metadata, dict):
        return "?"
    return f"{metadata.get('namespace') or ''}/{metadata.get('name') or metadata.get('generateName') or '?'}"


def _object(body: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise MalformedBodyError(f"body is not JSON: {error}") from error
    if not isinstance(document, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(document))
        raise MalformedBodyError(f"body is not a JSON object but {kind or 'a number'}")
    return document


def _pod(args: Mapping[str, Any]) -> dict[str, Any]:
    pod = field(args, "Pod")
    if not isinstance(pod, dict):
        raise WireError("no Pod in the call" if pod is None else "Pod is not an object")
    return pod


def _node_name(node: Any, index: int) -> str:
    metadata = node.get("metadata") if isinstance(node, dict) else None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(name, str) or not name:
        raise WireError(f"Nodes.items[{index}] has no metadata.name")
    return name


def parse_extender_args(body: bytes) -> ExtenderCall:
    """An ExtenderArgs body (filter, prioritize): the pod and the candidate nodes."""
    return _extender_call(_object(body))


#: How kube-scheduler (Go's encoding/json, fields in struct order) ends an ExtenderArgs in names mode.
_NAMES_TAIL = b',"NodeNames":['


class ExtenderArgsReader:
    """:func:`parse_extender_args` that reuses the node names of a recent call sent again byte for byte.

    kube-scheduler sends the same candidate list again and again (every pod is filtered against all
    the nodes that pass its own filters); at 5,000 nodes parsing, checking and comparing those names
    took about 0.5 ms of each call (benchmarks/extender.py). A body ending in ``,"NodeNames":[...]}``
    whose tail was seen before has only its head parsed (up to the tail, closed with ``}``): if that
    is a JSON object with members, the whole body is that object plus ``NodeNames`` last, which is
    what a full parse reads (the last of duplicate keys wins). Anything else takes the full parse.
    The names list is shared between calls: nobody may change it.

    ``known(tail)`` names a tail not seen here, where the service wrote those very bytes itself (the
    nodes its filter passed, sent on to prioritize: ``GpuExtender.known_node_names``).
    """

    def __init__(self, keep: int = 16, known: Callable[[bytes], list[str] | None] | None = None) -> None:
        self._names: BoundedDict[bytes, list[str]] = BoundedDict(keep)
        self._guard = threading.Lock()
        self._known = known

    def __call__(self, body: bytes) -> ExtenderCall:
        at = body.rfind(_NAMES_TAIL)
        if at <= 0 or not body.endswith(b"]}"):
            return parse_extender_args(body)
        tail = body[at:]
        with self._guard:
            names = self._names.use(tail)
        if names is None and self._known is not None:
            names = self._known(tail)
        if names is not None:
            try:
                head = _object(body[:at] + b"}")
            except MalformedBodyError:
                head = {}
            if head:
                head["NodeNames"] = names
                return _extender_call(head, names_checked=True)
        call = parse_extender_args(body)
        # The tail is the top-level NodeNames only if it is that very list, written as Go and orjson
        # write it (compact); encoding the names costs a fraction of parsing them again.
        if (
            call.node_cache_capable
            and call.nodes is None
            and tail[len(_NAMES_TAIL) - 1 : -1] == orjson.dumps(call.node_names)
        ):
            with self._guard:
                self._names[tail] = call.node_names
        return call


def _extender_call(args: dict[str, Any], *, names_checked: bool = False) -> ExtenderCall:
    pod = _pod(args)
    names, node_list = field(args, "NodeNames"), field(args, "Nodes")
    nodes: list[dict[str, Any]] | None = None
    if node_list is not None:
        items = field(node_list, "items") if isinstance(node_list, dict) else None
        if not isinstance(node_list, dict) or not isinstance(items, list | None):
            raise WireError("Nodes is not a NodeList (an object with a list of items)")
        nodes = items or []
    if names is not None:
        # Type by type, not isinstance per name: a 5,000-name call spent 0.3 ms in that generator.
        if not names_checked and (not isinstance(names, list) or not set(map(type, names)) <= {str}):
            raise WireError("NodeNames is not a list of strings")
        return ExtenderCall(pod=pod, node_names=names, nodes=nodes, node_cache_capable=True)
    if nodes is None:
        raise WireError("neither Nodes nor NodeNames in the call")
    names = [_node_name(node, index) for index, node in enumerate(nodes)]
    return ExtenderCall(pod=pod, node_names=names, nodes=nodes, node_cache_capable=False)


def parse_binding_args(body: bytes) -> BindingCall:
    """An ExtenderBindingArgs body: which pod goes to which node."""
    args = _object(body)
    values = {key: field(args, key) for key in ("PodNamespace", "PodName", "PodUID", "Node")}
    for key, value in values.items():
        if not isinstance(value, str) or (not value and key != "PodUID"):
            raise WireError(f"{key} is missing or not a non-empty string")
    return BindingCall(
        namespace=values["PodNamespace"], name=values["PodName"], uid=values["PodUID"], node=values["Node"]
    )


def _victims(node: str, body: Any, *, full: bool) -> Victims:
    if not isinstance(body, dict) or not isinstance(pods := field(body, "Pods"), list | None):
        raise WireError(f"victims on {node} are not an object with a list of Pods")
    violations = field(body, "NumPDBViolations")
    if violations is not None and (not isinstance(violations, int) or isinstance(violations, bool)):
        raise WireError(f"NumPDBViolations on {node} is not an integer")
    uids = []
    for pod in pods or []:
        # Whole pods (NodeNameToVictims) carry their UID in metadata.uid; MetaPods carry it as UID.
        owner = (pod.get("metadata") if full else pod) if isinstance(pod, dict) else None
        uid = (owner.get("uid") if full else field(owner, "UID")) if isinstance(owner, dict) else None
        if not isinstance(uid, str) or not uid:
            raise WireError(f"a victim on {node} has no {'metadata.uid' if full else 'UID'}")
        uids.append(uid)
    return Victims(pod_uids=uids, num_pdb_violations=violations or 0)


def parse_preemption_args(body: bytes) -> PreemptionCall:
    """An ExtenderPreemptionArgs body: the pod and the victims kube-scheduler chose on each node."""
    args = _object(body)
    pod = _pod(args)
    full = False
    by_node = field(args, "NodeNameToMetaVictims")
    if by_node is None:
        by_node, full = field(args, "NodeNameToVictims"), True
    if by_node is None:
        raise WireError("neither NodeNameToVictims nor NodeNameToMetaVictims in the call")
    if not isinstance(by_node, dict):
        raise WireError(f"{'NodeNameToVictims' if full else 'NodeNameToMetaVictims'} is not an object")
    victims = {node: _victims(node, each, full=full) for node, each in by_node.items()}
    return PreemptionCall(pod=pod, victims=victims, full_victims=full)


def filter_result(call: ExtenderCall, outcome: FilterOutcome) -> bytes:
    """The ExtenderFilterResult, in the call's mode: names in nodeCacheCapable mode, else the Nodes.

    A reply with neither would drop every node. Passed nodes that were not asked about are left out
    (kube-scheduler fails the whole filter on them), and an asked node the outcome neither passed nor
    gave a reason for is reported unresolvable with a reason, so no node is dropped silently.
    """
    asked = set(call.node_names)
    passed = [name for name in dict.fromkeys(outcome.passed) if name in asked]
    unresolvable = dict(outcome.unresolvable)
    accounted = set(passed).union(outcome.failed, unresolvable)
    for name in call.node_names:
        if name not in accounted:
            unresolvable[name] = "gpu-manager: node rejected without a reason (a bug in the GPU extender)"
    nodes: NodeList | None = None
    if call.nodes is not None:
        keep = set(passed)
        nodes = {"metadata": {}, "items": [node for node in call.nodes if _name_of(node) in keep]}
    result: ExtenderFilterResult = {
        "Nodes": nodes,
        "NodeNames": passed if call.node_cache_capable else None,
        "FailedNodes": dict(outcome.failed),
        "FailedAndUnresolvableNodes": unresolvable,
        "Error": "",
    }
    return orjson.dumps(result)


def _name_of(node: dict[str, Any]) -> Any:
    metadata = node.get("metadata")
    return metadata.get("name") if isinstance(metadata, dict) else None


def filter_error(call: ExtenderCall | None, message: str) -> bytes:
    """An ExtenderFilterResult with only ``Error``, as Go writes it; kube-scheduler then reads nothing
    else, whatever the call was (``call`` is taken so callers need not care how far parsing got)."""
    del call
    result: ExtenderFilterResult = {
        "Nodes": None,
        "NodeNames": None,
        "FailedNodes": None,
        "FailedAndUnresolvableNodes": None,
        "Error": message,
    }
    return orjson.dumps(result)


def prioritize_result(scores: Mapping[str, int]) -> bytes:
    """A HostPriorityList: a bare array; scores clamped to 0..10 (kube-scheduler does not check).

    Written by hand rather than through a list of dicts: at 5,000 nodes building the dicts took
    1.4 ms and this 0.65 ms (benchmarks/extender.py). Node names are DNS subdomains; any name that
    would need JSON escaping sends the whole reply down the general path.
    """
    if not _JSON_SAFE.fullmatch("".join(scores)):
        general: list[HostPriority] = [
            {"Host": host, "Score": min(max(score, 0), MAX_SCORE)} for host, score in scores.items()
        ]
        return orjson.dumps(general)
    items = [f'{{"Host":"{host}","Score":{min(max(score, 0), MAX_SCORE)}}}' for host, score in scores.items()]
    return ("[" + ",".join(items) + "]").encode()


def binding_result(error: str | None) -> bytes:
    result: ExtenderBindingResult = {"Error": error or ""}
    return orjson.dumps(result)


def preemption_result(victims: Mapping[str, Victims]) -> bytes:
    """An ExtenderPreemptionResult: always MetaVictims (UIDs), the only form kube-scheduler reads back."""
    result: ExtenderPreemptionResult = {"NodeNameToMetaVictims": _meta(victims)}
    return orjson.dumps(result)


def preemption_error(message: str) -> bytes:
    """No node is worth preempting on: the Go struct has no ``Error``, so kube-scheduler sees an empty
    map and evicts nothing (fail closed); ``Error`` is there for whoever reads the reply."""
    result: ExtenderPreemptionResult = {"NodeNameToMetaVictims": {}, "Error": message}
    return orjson.dumps(result)


def _meta(victims: Mapping[str, Victims]) -> dict[str, MetaVictims]:
    return {
        node: {"Pods": [{"UID": uid} for uid in each.pod_uids], "NumPDBViolations": each.num_pdb_violations}
        for node, each in victims.items()
    }
