"""wire.ExtenderArgsReader: a call sent again reuses its parsed node names, and reads as a full parse."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from extender import wire

POD = {"metadata": {"name": "p", "namespace": "ml", "uid": "u1"}, "spec": {"containers": []}}
NAMES = ["n1", "n2", "n3"]


def body(pod: object = POD, names: object = NAMES, **extra: object) -> bytes:
    return orjson.dumps({"Pod": pod, "Nodes": None, **extra, "NodeNames": names})


def same(a: wire.ExtenderCall, b: wire.ExtenderCall) -> bool:
    return (a.pod, a.node_names, a.nodes, a.node_cache_capable) == (
        b.pod,
        b.node_names,
        b.nodes,
        b.node_cache_capable,
    )


#: Bodies whose tail looks like a known list's but that a full parse reads otherwise, or refuses.
ODD_BODIES = [
    # A nested NodeNames at the end of the pod: not the call's own list.
    b'{"Pod":{"metadata":{"uid":"u"},"x":[{"a":1,"NodeNames":["n1","n2","n3"]}]}}',
    # The call's list written twice: the last one counts, as in a full parse.
    b'{"Pod":{"metadata":{"uid":"u"}},"NodeNames":["zz"],"NodeNames":["n1","n2","n3"]}',
    # The known tail closing an object left open inside the pod: not JSON at all.
    b'{"Pod":{"x":[{"a":1,"NodeNames":["n1","n2","n3"]}',
    # Only the list: no pod.
    b'{"NodeNames":["n1","n2","n3"]}',
    b'{,"NodeNames":["n1","n2","n3"]}',
    # The list with spaces (not how Go writes it): parsed in full every time.
    b'{"Pod":{"metadata":{"uid":"u"}}, "NodeNames": ["n1", "n2", "n3"]}',
]


def test_a_repeated_list_is_parsed_once() -> None:
    reader = wire.ExtenderArgsReader()
    first = reader(body())
    other_pod = {**POD, "metadata": {**POD["metadata"], "uid": "u2"}}  # type: ignore[dict-item]
    second = reader(body(pod=other_pod))
    assert second.node_names is first.node_names  # shared, not parsed again
    assert same(second, wire.parse_extender_args(body(pod=other_pod)))


@pytest.mark.parametrize("sent", ODD_BODIES)
def test_any_body_reads_as_a_full_parse_would(sent: bytes) -> None:
    reader = wire.ExtenderArgsReader()
    reader(body())  # the list's tail is known now
    for _ in range(2):
        try:
            expected = wire.parse_extender_args(sent)
        except wire.WireError as error:
            with pytest.raises(type(error), match=str(error)[:20]):
                reader(sent)
            continue
        assert same(reader(sent), expected)


def test_the_reader_remembers_a_bounded_number_of_lists() -> None:
    reader = wire.ExtenderArgsReader(keep=2)
    calls = [reader(body(names=[f"n{i}"])) for i in range(3)]
    assert reader(body(names=["n2"])).node_names is calls[2].node_names
    assert reader(body(names=["n0"])).node_names is not calls[0].node_names  # forgotten: parsed again


def knows(names: list[str]) -> Callable[[bytes], list[str] | None]:
    """A service's ``known_node_names`` that knows one list: the one it wrote, byte for byte."""
    tail = b',"NodeNames":' + orjson.dumps(names) + b"}"
    return lambda sent: names if sent == tail else None


def test_a_list_the_service_wrote_is_taken_from_it_unparsed() -> None:
    names = list(NAMES)
    reader = wire.ExtenderArgsReader(known=knows(names))
    call = reader(body())
    assert call.node_names is names
    assert same(call, wire.parse_extender_args(body()))
    assert reader(body(names=["n1"])).node_names == ["n1"]  # a list it does not know: parsed


@pytest.mark.parametrize("sent", ODD_BODIES)
def test_with_the_services_lists_any_body_still_reads_as_a_full_parse_would(sent: bytes) -> None:
    reader = wire.ExtenderArgsReader(known=knows(list(NAMES)))
    try:
        expected = wire.parse_extender_args(sent)
    except wire.WireError as error:
        with pytest.raises(type(error), match=str(error)[:20]):
            reader(sent)
        return
    assert same(reader(sent), expected)
