"""Typed config fields: strict conversion to a field's declared type, range checks, comments.

Pure. Shared by every config section (each a frozen dataclass beside what consumes it) and by
`convjax.config`, which composes them; this module imports no section, so no cycle. A section
names its place in the config tree with `config_key: ClassVar[str]` (e.g. "train") and calls
`check_fields(self)` then `require(...)` in `__post_init__`, so every error names the full
dotted key and an invalid section cannot be built.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import math
import numbers
import textwrap
import tokenize
import types
import typing
from typing import Any, Literal

BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True,
              "false": False, "no": False, "off": False, "0": False}


class ConfigError(ValueError):
    """A bad config value, one line naming its dotted key: `train.epochs: must be >= 1, got 0`
    (`named=True`: the message names the key itself)."""

    def __init__(self, key: str, message: str, *, named: bool = False):
        super().__init__(message if named else f"{key}: {message}")
        self.key, self.message = key, message


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """The dataclass's fields and their resolved annotations, in declaration order."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def join_key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def key_of(obj: Any, name: str) -> str:
    return join_key(getattr(obj, "config_key", ""), name)


def _is_union(typ: Any) -> bool:
    return typing.get_origin(typ) in (typing.Union, types.UnionType)


def type_name(typ: Any) -> str:
    """`int`, `tuple[int, ...]`, `{max, avg, none}` (a Literal's choices), `float | None`."""
    if _is_union(typ):
        return " | ".join(type_name(member) for member in typing.get_args(typ))
    args = typing.get_args(typ)
    if typing.get_origin(typ) is Literal:
        return "{" + ", ".join(str(choice) for choice in args) + "}"
    if typing.get_origin(typ) is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"tuple[{type_name(args[0])}, ...]"
        return f"tuple[{', '.join(type_name(a) for a in args)}]"
    return "None" if typ is type(None) else getattr(typ, "__name__", str(typ))


def coerce(value: Any, typ: Any, key: str, widen: bool = True) -> Any:
    """`value` as type `typ`, or ConfigError. Strict: no str -> number, no float -> int, no
    int -> bool. A list becomes a tuple; with `widen`, an int becomes a float where a float
    is declared (a union first looks for an exact match: an int shift range is not a float)."""
    if _is_union(typ):
        for widen_now in (False, True) if widen else (False,):
            for member in typing.get_args(typ):
                try:
                    return coerce(value, member, key, widen_now)
                except ConfigError:
                    pass
    elif typing.get_origin(typ) is Literal:
        choices = typing.get_args(typ)
        for choice in choices:  # type check too: True is not the choice 1
            if type(value) is type(choice) and value == choice:
                return choice
        listed = ", ".join(repr(choice) for choice in choices)
        raise ConfigError(key, f"must be one of {listed}; got {value!r}")
    elif typing.get_origin(typ) is tuple:
        return _coerce_tuple(value, typ, key, widen)
    elif dataclasses.is_dataclass(typ):
        if isinstance(value, typ):
            return value
    elif typ is type(None) or typ is Any:
        if value is None or typ is Any:
            return value
    elif typ in (bool, int, float, str):
        ok, value = _coerce_scalar(value, typ, widen)
        if ok:
            return value
    else:
        raise TypeError(f"{key}: config fields cannot have type {typ!r}")
    raise ConfigError(key, f"expected {type_name(typ)}, got {value!r}")


def _coerce_scalar(value: Any, typ: type, widen: bool) -> tuple[bool, Any]:
    if typ is bool or typ is str:
        return isinstance(value, typ), value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False, value
    if typ is int:
        ok = isinstance(value, numbers.Integral)
        return ok, int(value) if ok else value
    if isinstance(value, numbers.Integral) and not widen:
        return False, value
    return math.isfinite(value), float(value)  # inf and nan break every range check


def _coerce_tuple(value: Any, typ: Any, key: str, widen: bool) -> tuple:
    args = typing.get_args(typ)
    if isinstance(value, list):
        value = tuple(value)
    variadic = len(args) == 2 and args[1] is Ellipsis
    if isinstance(value, tuple) and (variadic or len(value) == len(args)):
        item_types = [args[0]] * len(value) if variadic else list(args)
        try:
            return tuple(coerce(v, t, key, widen) for v, t in zip(value, item_types))
        except ConfigError:
            pass
    raise ConfigError(key, f"expected {type_name(typ)}, got {value!r}")


def parse_text(text: str, typ: Any, key: str) -> Any:
    """A command-line value as `typ`: strings need no quotes, booleans are words (true/false),
    a lone value for a `tuple[X, ...]` field is a one-element tuple."""
    members = typing.get_args(typ) if _is_union(typ) else (typ,)
    if bool in members and text.lower() in BOOL_WORDS:
        return BOOL_WORDS[text.lower()]
    if typ is bool:
        raise ConfigError(key, f"expected true/false, got {text!r}")
    if any(m is str or (typing.get_origin(m) is Literal and text in typing.get_args(m))
           for m in members):
        return coerce(text, typ, key)
    if type(None) in members and text.lower() in ("none", "null"):
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        if any(typing.get_origin(m) is Literal for m in members):
            return coerce(text, typ, key)  # "must be one of ...", listing the choices
        raise ConfigError(key, f"{text!r} is not a valid {type_name(typ)}") from None
    args = typing.get_args(typ)
    if typing.get_origin(typ) is tuple and args[-1] is Ellipsis and not isinstance(
            value, (list, tuple)):
        value = (value,)
    return coerce(value, typ, key)


def check_fields(obj: Any) -> None:
    """Converts each field of the frozen dataclass `obj` in place to its declared type (lists
    become tuples, ints floats where floats are declared) or raises ConfigError naming it."""
    for name, typ in field_types(type(obj)).items():
        value = coerce(getattr(obj, name), typ, key_of(obj, name))
        object.__setattr__(obj, name, value)  # frozen: __post_init__ is the only writer


def require(ok: bool, obj: Any, name: str, rule: str) -> None:
    """Raises `<section>.<name>: must be <rule>, got <value>` unless `ok`."""
    if not ok:
        raise ConfigError(key_of(obj, name), f"must be {rule}, got {getattr(obj, name)!r}")


@functools.cache
def field_comments(cls: type) -> dict[str, str]:
    """Each field's trailing `# comment` in the class source (the config's documentation,
    kept beside the field where it is read; `--help` shows it). Empty without sources."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                if tok.type == tokenize.COMMENT}
    class_def = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef))
    return {
        node.target.id: " ".join(comments[line] for line in
                                 range(node.lineno, node.end_lineno + 1) if line in comments)
        for node in class_def.body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    }
