"""The method registry (polykey/rpc.py): params decoded into frozen dataclasses with strict
types; every refusal is InvalidParams, one line naming the field and never holding its value."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from polykey.errors import InvalidInput
from polykey.rpc import InvalidParams, NoParams, Registry, UnknownMethod

SECRET = "hunter2-do-not-show"
SECRET_BYTES = SECRET.encode()

REG: Registry[list[str], Any] = Registry()


@dataclass(frozen=True)
class Everything:
    name: str
    flag: bool = False
    count: int | None = None
    data: bytes = field(default=b"", repr=False)
    names: list[str] = field(default_factory=list)
    pairs: list[tuple[str, str]] = field(default_factory=list)
    items: list[tuple[str, bytes]] = field(default_factory=list, repr=False)
    tags: dict[str, list[str]] = field(default_factory=dict)
    anything: Any = field(default=None, repr=False)


@REG.method("test.everything")
def everything(context: list[str], p: Everything) -> Everything:
    context.append(p.name)
    return p


@REG.method("test.none")
def nothing(context: list[str], p: NoParams) -> str:
    return "done"


def decode(params: dict[str, Any]) -> Everything:
    result: Everything = REG.call([], "test.everything", params)
    return result


def refusal(params: dict[str, Any], registry: Registry[list[str], Any] = REG) -> str:
    with pytest.raises(InvalidParams) as caught:
        registry.call([], "test.everything", params)
    message = caught.value.message
    assert "\n" not in message
    assert SECRET not in message and repr(SECRET_BYTES) not in message
    assert caught.value.exit_code == InvalidInput.exit_code == 3
    return message


def test_a_method_gets_its_context_and_its_params_as_the_dataclass() -> None:
    seen: list[str] = []
    p = REG.call(seen, "test.everything", {"name": "a"})
    assert seen == ["a"]
    assert p == Everything("a")


def test_every_supported_type_is_decoded() -> None:
    p = decode(
        {
            "name": "n",
            "flag": True,
            "count": 3,
            "data": b"\x00\xff",
            "names": ["a", "b"],
            "pairs": [["v", "p"], ("w", "q")],
            "items": [["path", b"value"]],
            "tags": {"path": ["t1", "t2"]},
            "anything": {"x": [1]},
        }
    )
    assert p.flag is True and p.count == 3 and p.data == b"\x00\xff"
    assert p.names == ["a", "b"]
    assert p.pairs == [("v", "p"), ("w", "q")]
    assert p.items == [("path", b"value")]
    assert p.tags == {"path": ["t1", "t2"]}
    assert p.anything == {"x": [1]}


def test_defaults_fill_absent_fields_and_none_is_taken_only_where_the_type_says() -> None:
    p = decode({"name": "n", "count": None})
    assert p == Everything("n")
    assert "flag must be true or false" in refusal({"name": "n", "flag": None})
    assert "name must be text" in refusal({"name": None})


def test_a_missing_required_field_is_named() -> None:
    assert refusal({}) == "Invalid parameters: test.everything: name is required"


def test_an_unknown_key_is_refused_by_name() -> None:
    message = refusal({"name": "n", "nmae": SECRET})
    assert message == "Invalid parameters: test.everything: unknown parameter 'nmae'"


def test_an_unknown_key_is_ignored_by_a_registry_that_says_so() -> None:
    lenient: Registry[list[str], Any] = Registry(ignore_unknown_keys=True)
    lenient.method("test.everything")(everything)
    assert lenient.call([], "test.everything", {"name": "n", "later": 1}) == Everything("n")
    assert "name must be text" in refusal({"name": 1}, lenient)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"name": SECRET_BYTES}, "name must be text"),
        ({"name": "n", "flag": 1}, "flag must be true or false"),
        ({"name": "n", "flag": SECRET}, "flag must be true or false"),
        ({"name": "n", "count": True}, "count must be a whole number"),
        ({"name": "n", "count": 1.5}, "count must be a whole number"),
        ({"name": "n", "count": SECRET}, "count must be a whole number"),
        ({"name": "n", "data": SECRET}, "data must be bytes"),
        ({"name": "n", "data": bytearray(SECRET_BYTES)}, "data must be bytes"),
        ({"name": "n", "names": SECRET}, "names must be a list of text"),
        ({"name": "n", "names": ["a", SECRET_BYTES]}, "names must be a list of text"),
        ({"name": "n", "pairs": [[SECRET]]}, "pairs must be a list of [text, text] pairs"),
        (
            {"name": "n", "pairs": [["a", "b", SECRET]]},
            "pairs must be a list of [text, text] pairs",
        ),
        ({"name": "n", "items": [["p", SECRET]]}, "items must be a list of [text, bytes] pairs"),
        ({"name": "n", "tags": {"p": SECRET}}, "tags must be a map of text to lists of text"),
        ({"name": "n", "tags": [SECRET]}, "tags must be a map of text to lists of text"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_naming_the_field_not_the_value(
    params: dict[str, Any], expected: str
) -> None:
    assert refusal(params) == f"Invalid parameters: test.everything: {expected}"


def test_params_that_are_not_an_object_are_refused() -> None:
    with pytest.raises(InvalidParams, match="the params must be an object"):
        REG.call([], "test.everything", [SECRET])  # type: ignore[arg-type]


def test_a_method_without_params_takes_none() -> None:
    assert REG.call([], "test.none", {}) == "done"
    with pytest.raises(InvalidParams, match="unknown parameter 'x'"):
        REG.call([], "test.none", {"x": 1})


def test_an_unknown_method_is_unknown_method_with_exit_code_2() -> None:
    with pytest.raises(UnknownMethod) as caught:
        REG.call([], "no.such", {})
    assert caught.value.exit_code == 2
    assert "no.such" in caught.value.message


def test_the_registry_lists_its_methods() -> None:
    assert "test.none" in REG and "no.such" not in REG
    assert list(REG) == ["test.everything", "test.none"]
    assert len(REG) == 2
    assert REG.get("test.none").params is NoParams


def test_secret_fields_stay_out_of_the_params_repr() -> None:
    p = decode({"name": "n", "data": SECRET_BYTES, "items": [["p", SECRET_BYTES]]})
    assert SECRET not in repr(p)


def test_registering_refuses_a_method_it_could_not_check() -> None:
    reg: Registry[None, None] = Registry()

    @dataclass(frozen=True)
    class Shown:
        data: bytes  # may hold a secret, yet shown in the repr

    @dataclass
    class Mutable:
        name: str

    @dataclass(frozen=True)
    class Floaty:
        ratio: float

    def method(context: None, p: Any) -> None: ...

    for params, why in [
        (Shown, "may hold a secret"),
        (Mutable, "frozen dataclass"),
        (Floaty, "cannot be of type"),
        (dict[str, Any], "frozen dataclass"),
    ]:
        method.__annotations__["p"] = params  # local classes: given as objects, not names
        with pytest.raises(TypeError, match=why):
            reg.method("x")(method)
    assert len(reg) == 0


def test_a_name_cannot_be_registered_twice() -> None:
    with pytest.raises(ValueError, match="twice"):
        REG.method("test.none")(nothing)
