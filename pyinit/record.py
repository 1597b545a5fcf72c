"""A tiny immutable value type, used instead of :mod:`dataclasses`.

``import dataclasses`` pulls in :mod:`inspect` and costs about 9 ms, most of
pyinit's exec-path budget (the goal is < 2x a bare ``python3 -c pass``).
A subclass lists its fields in ``__slots__`` (with annotations for mypy) and
is built with keyword arguments; afterwards it cannot be changed, and
neither can what it holds: a list, dict, set or bytearray field is refused
(use a tuple, frozenset or :class:`types.MappingProxyType`).
"""

from __future__ import annotations

from types import MappingProxyType

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, dataclass_transform

    # For mypy only: each subclass gets a typed keyword-only constructor from
    # its annotations, as a frozen dataclass would (no run-time cost).
    @dataclass_transform(kw_only_default=True, frozen_default=True)
    class _RecordMeta(type):
        pass

else:
    _RecordMeta = type


#: What a field may not hold: a frozen record of shared mutable state is not frozen.
_MUTABLE = (list, dict, set, bytearray)


class Record(metaclass=_RecordMeta):
    """Keyword-constructed, immutable, comparable, printable value object."""

    __slots__ = ()

    def __init__(self, **fields: Any) -> None:
        names = self._field_names()
        missing = [n for n in names if n not in fields]
        extra = [n for n in fields if n not in names]
        if missing or extra:
            raise TypeError(f"{type(self).__name__}: missing {missing}, unexpected {extra}")
        for name, value in fields.items():
            if isinstance(value, _MUTABLE):
                raise TypeError(
                    f"{type(self).__name__}.{name}: a {type(value).__name__} can be changed in "
                    "place; use a tuple, frozenset or MappingProxyType"
                )
            object.__setattr__(self, name, value)

    @classmethod
    def _field_names(cls) -> tuple[str, ...]:
        names: list[str] = []
        for klass in reversed(cls.__mro__):
            names.extend(klass.__dict__.get("__slots__", ()))
        return tuple(names)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (nested Records are converted too)."""
        return {name: _plain(getattr(self, name)) for name in self._field_names()}

    def replace(self, **changes: Any) -> Any:
        """A copy with some fields changed."""
        fields = {name: getattr(self, name) for name in self._field_names()}
        fields.update(changes)
        return type(self)(**fields)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self._field_names())

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, n) for n in self._field_names()))

    def __repr__(self) -> str:
        body = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._field_names())
        return f"{type(self).__name__}({body})"


def _plain(value: Any) -> Any:
    if isinstance(value, Record):
        return value.as_dict()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, (dict, MappingProxyType)):
        return {k: _plain(v) for k, v in value.items()}
    return value
