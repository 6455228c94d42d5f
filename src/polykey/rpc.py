"""One registry of methods, whichever door a request comes in by: the CLI in-process, the agent's
socket, the peer port.

A method is a function of a context (the Node, the Agent, a peer's request) and its parameters,
described by a frozen dataclass::

    @dataclass(frozen=True)
    class VaultsLog:
        name: str
        limit: int | None = None

    @METHODS.method("vaults.log")
    def vaults_log(node: Node, p: VaultsLog) -> dict[str, Any]: ...

The registry turns a request's params (a JSON object, with bytes already decoded) into that
dataclass, with strict checks: ``str``, ``bool``, ``int`` (a bool is not one), ``bytes``, ``Any``,
and lists, fixed-length tuples, ``dict[str, …]`` and ``… | None`` of those; a field without a
default is required, and a key no field names is refused (unless the registry ignores unknown
keys, as the peer port does: that is how its protocol grows). A bad value is
:class:`InvalidParams`, one line naming the field and what it must be, never the value.

A field that may hold bytes (or ``Any``) may hold a secret: it must be declared with
``field(repr=False)``, or registering the method fails.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from polykey.errors import InvalidInput, PolykeyError

C = TypeVar("C")  # what every method of a registry gets first: the Node, the Agent, a peer call
R = TypeVar("R")  # what they return
P = TypeVar("P")  # one method's params dataclass


class InvalidParams(InvalidInput):
    """Invalid parameters."""


class UnknownMethod(PolykeyError):
    """No such method."""

    exit_code = 2
    hint = "The CLI and the agent may be of different versions; restart the agent."


@dataclasses.dataclass(frozen=True)
class NoParams:
    """The params of a method that takes none."""


class _Wrong(Exception):
    """A value that is not of its field's type (caught, and told without the value)."""


@dataclasses.dataclass(frozen=True)
class _Shape:
    check: Callable[[Any], Any]  # the value as the dataclass holds it, or _Wrong
    one: str  # what a value must be: "text", "a list of text"
    many: str  # what the items of a list must be: "text", "lists of text"
    short: str  # its name inside a tuple: "text", "list"
    secret: bool  # may hold bytes


def _scalar(
    test: Callable[[Any], bool], one: str, many: str, short: str, *, secret: bool = False
) -> _Shape:
    def check(value: Any) -> Any:
        if not test(value):
            raise _Wrong
        return value

    return _Shape(check, one, many, short, secret)


_SCALARS = {
    str: _scalar(lambda v: isinstance(v, str), "text", "text", "text"),
    bytes: _scalar(lambda v: isinstance(v, bytes), "bytes", "bytes", "bytes", secret=True),
    bool: _scalar(lambda v: v is True or v is False, "true or false", "true or false", "flag"),
    int: _scalar(
        lambda v: isinstance(v, int) and not isinstance(v, bool),
        "a whole number",
        "whole numbers",
        "number",
    ),
}
_ANY = _Shape(lambda value: value, "a value", "values", "value", secret=True)


def _shape(hint: Any) -> _Shape:
    """How to check a value of the type ``hint``; TypeError for a type the registry does not
    take (at registration, so a method cannot be served unchecked)."""
    if hint is Any:
        return _ANY
    if hint in _SCALARS:
        return _SCALARS[hint]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union) and len(args) == 2 and type(None) in args:
        return _optional(_shape(next(a for a in args if a is not type(None))))
    if origin is list and len(args) == 1:
        return _list(_shape(args[0]))
    if origin is tuple and args and ... not in args:
        return _tuple([_shape(a) for a in args])
    if origin is dict and len(args) == 2 and args[0] is str:
        return _dict(_shape(args[1]))
    raise TypeError(f"a method's params cannot be of type {hint!r}")


def _optional(inner: _Shape) -> _Shape:
    def check(value: Any) -> Any:
        return None if value is None else inner.check(value)

    return _Shape(check, inner.one, inner.many, inner.short, inner.secret)


def _list(item: _Shape) -> _Shape:
    def check(value: Any) -> Any:
        if not isinstance(value, list | tuple):
            raise _Wrong
        if item is _ANY:
            return value if isinstance(value, list) else list(value)
        return [item.check(v) for v in value]

    many = f"lists of {item.many}"
    return _Shape(check, f"a list of {item.many}", many, "list", item.secret)


def _tuple(items: list[_Shape]) -> _Shape:
    def check(value: Any) -> Any:
        if not isinstance(value, list | tuple) or len(value) != len(items):
            raise _Wrong
        return tuple(item.check(v) for item, v in zip(items, value, strict=True))

    inside = f"[{', '.join(i.short for i in items)}]"
    noun = "pair" if len(items) == 2 else "list"
    secret = any(i.secret for i in items)
    return _Shape(check, f"a {inside} {noun}", f"{inside} {noun}s", "list", secret)


def _dict(value_shape: _Shape) -> _Shape:
    def check(value: Any) -> Any:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise _Wrong
        return {k: value_shape.check(v) for k, v in value.items()}

    one = f"a map of text to {value_shape.many}"
    many = f"maps of text to {value_shape.many}"
    return _Shape(check, one, many, "map", value_shape.secret)


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    shape: _Shape
    required: bool


@dataclasses.dataclass(frozen=True)
class Method(Generic[C, R]):
    """One registered method: its function and how its params are read."""

    name: str
    fn: Callable[[C, Any], R]
    params: type
    fields: tuple[_Field, ...]


def _params_class(fn: Callable[..., Any]) -> type:
    """The frozen dataclass that ``fn``'s second parameter is annotated with."""
    code = fn.__code__
    if code.co_argcount != 2:
        raise TypeError(f"{fn.__qualname__} must take (context, params)")
    hint = fn.__annotations__.get(code.co_varnames[1])
    if isinstance(hint, str):  # `from __future__ import annotations`: a name of its module
        hint = fn.__globals__.get(hint)
    params = getattr(hint, "__dataclass_params__", None)
    if not isinstance(hint, type) or params is None or not params.frozen:
        raise TypeError(f"{fn.__qualname__}: its params must be a frozen dataclass")
    return hint


def _fields(cls: type) -> tuple[_Field, ...]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        shape = _shape(hints[f.name])
        if shape.secret and f.repr:
            raise TypeError(
                f"{cls.__qualname__}.{f.name} may hold a secret: declare it field(repr=False)"
            )
        no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        out.append(_Field(f.name, shape, no_default))
    return tuple(out)


class Registry(Generic[C, R]):
    """Methods by name, each called as ``fn(context, params)`` with its params checked."""

    def __init__(self, *, ignore_unknown_keys: bool = False) -> None:
        self._methods: dict[str, Method[C, R]] = {}
        self.ignore_unknown_keys = ignore_unknown_keys

    def method(self, name: str) -> Callable[[Callable[[C, P], R]], Callable[[C, P], R]]:
        """Register the decorated function as the method ``name``."""

        def register(fn: Callable[[C, P], R]) -> Callable[[C, P], R]:
            if name in self._methods:
                raise ValueError(f"method {name} is registered twice")
            params = _params_class(fn)
            self._methods[name] = Method(name, fn, params, _fields(params))
            return fn

        return register

    def __contains__(self, name: object) -> bool:
        return name in self._methods

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._methods))

    def __len__(self) -> int:
        return len(self._methods)

    def get(self, name: str) -> Method[C, R]:
        """The method ``name``, or UnknownMethod."""
        found = self._methods.get(name)
        if found is None:
            raise UnknownMethod(name[:80])
        return found

    def decode(self, name: str, params: Mapping[str, Any]) -> Any:
        """``params`` as the dataclass of the method ``name``, or InvalidParams."""
        method = self.get(name)
        if not isinstance(params, Mapping):
            raise InvalidParams(f"{name}: the params must be an object")
        if not self.ignore_unknown_keys:
            known = {f.name for f in method.fields}
            unknown = sorted(str(k) for k in params if k not in known)
            if unknown:
                raise InvalidParams(f"{name}: unknown parameter {unknown[0][:40]!r}")
        values: dict[str, Any] = {}
        for f in method.fields:
            if f.name not in params:
                if f.required:
                    raise InvalidParams(f"{name}: {f.name} is required")
                continue
            try:
                values[f.name] = f.shape.check(params[f.name])
            except _Wrong:
                raise InvalidParams(f"{name}: {f.name} must be {f.shape.one}") from None
        return method.params(**values)

    def call(self, context: C, name: str, params: Mapping[str, Any]) -> R:
        """Run the method ``name`` on ``context`` with ``params`` checked: UnknownMethod,
        InvalidParams, or what the method returns (or raises)."""
        return self.get(name).fn(context, self.decode(name, params))
