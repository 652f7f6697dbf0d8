"""YAML as SOPS reads it (Go's yaml.v3), and YAML for containers to read.

Typing decides the MAC: a plain `yes` is the string "yes" to yaml.v3 (YAML 1.2 core schema) and
the bool True to PyYAML's YAML 1.1 resolvers, and the MAC hashes `yes` in one case and `True` in
the other. So the loader here drops every implicit resolver of PyYAML and sends each untagged
plain scalar to one resolver that reproduces yaml.v3's `resolve`:

    true/True/TRUE, false/...         bool
    ""  ~  null/Null/NULL             null
    .inf .nan (and signed/cased)      float
    leading digit or sign             timestamp (yaml.v3's four layouts), else int after removing
                                      `_` (Go base 0: 0x, 0o, 0b and C-style 0777; int64, then
                                      uint64), else float when it looks like one (`09` is 9.0)
    leading `.`                       float when Go parses it
    anything else                     string (`yes`, `no`, `on`, `off`, `<<` ...)

Quoted and block scalars are strings; explicit tags (!!int, !!str, !!binary ...) are honoured as
yaml.v3 does; unknown tags leave the node's plain shape. Keys go through the same resolver, and,
as in sops, a key that is not a string, a duplicate key, or a top level that is not a mapping is
an error. `<<` is an ordinary key (sops walks yaml.v3's node tree, which does not merge), aliases
are expanded. Comments are not kept: they never enter the MAC.

PyYAML's C parser (CSafeLoader) is used when available: the resolver and constructors are
Python-level hooks that it calls like the pure-Python parser does.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from typing import Any

import yaml

from composeflux.sops._errors import SopsError
from composeflux.sops._golang import INT64_MIN, parse_yaml_timestamp

_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DumperBase: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

PLAIN_TAG = "tag:composeflux.invalid,2026:plain"
_STR = "tag:yaml.org,2002:str"

_SPECIAL: dict[str, object] = {
    **dict.fromkeys(("true", "True", "TRUE"), True),
    **dict.fromkeys(("false", "False", "FALSE"), False),
    **dict.fromkeys(("", "~", "null", "Null", "NULL"), None),
    **dict.fromkeys((".nan", ".NaN", ".NAN"), math.nan),
    **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), math.inf),
    **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), -math.inf),
}
_YAML_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?\Z")
_DOT_FLOAT = re.compile(r"\.[0-9]+(?:[eE][-+]?[0-9]+)?\Z")
_DIGITS = {16: frozenset("0123456789abcdefABCDEF"), 10: frozenset("0123456789"), 8: frozenset("01234567"), 2: frozenset("01")}


def _go_int(text: str, *, unsigned: bool) -> int | None:
    """strconv.ParseInt(text, 0, 64) (or ParseUint): sign (signed only), then 0x/0o/0b or a
    leading 0 for octal, else decimal; None when it is no such integer or out of range."""
    negative = False
    if not unsigned and text[:1] in ("+", "-"):
        negative, text = text[0] == "-", text[1:]
    if len(text) > 1 and text[0] == "0":
        prefix = text[1]
        base, digits = {"x": (16, text[2:]), "X": (16, text[2:]), "o": (8, text[2:]), "O": (8, text[2:]),
                        "b": (2, text[2:]), "B": (2, text[2:])}.get(prefix, (8, text[1:]))
    else:
        base, digits = 10, text
    if not digits or not set(digits) <= _DIGITS[base]:
        return None
    number = -int(digits, base) if negative else int(digits, base)
    if unsigned:
        return number if number < 2**64 else None
    return number if INT64_MIN <= number < 2**63 else None


def resolve_plain(text: str) -> object:
    """The value yaml.v3 gives an untagged plain scalar (see the module docstring)."""
    if text in _SPECIAL:
        return _SPECIAL[text]
    first = text[0]
    if first == ".":
        if _DOT_FLOAT.match(text) and math.isfinite(number := float(text)):
            return number
        return text
    if first in "+-0123456789":
        timestamp = parse_yaml_timestamp(text)
        if timestamp is not None:
            return timestamp
        plain = text.replace("_", "")
        if plain:
            for unsigned in (False, True):
                integer = _go_int(plain, unsigned=unsigned)
                if integer is not None:
                    return integer
            if _YAML_FLOAT.match(plain) and math.isfinite(number := float(plain)):
                return number
    return text


class _Problem(yaml.MarkedYAMLError):
    """A document that yaml.v3 reads but sops rejects (or that we reject as sops does)."""


def _fail(problem: str, node: yaml.Node) -> _Problem:
    return _Problem(problem=problem, problem_mark=node.start_mark)


class _Loader(_Base):  # type: ignore[misc]  # PyYAML's loaders are untyped (Any) base classes
    """PyYAML with yaml.v3's typing: no YAML 1.1 implicit resolvers, one for every plain scalar."""

    yaml_implicit_resolvers: dict[Any, Any] = {}  # noqa: RUF012  # PyYAML's own class-level registry
    yaml_constructors: dict[Any, Any] = {}  # noqa: RUF012
    yaml_multi_constructors: dict[Any, Any] = {}  # noqa: RUF012


_Loader.add_implicit_resolver(PLAIN_TAG, re.compile(r"", re.DOTALL), None)


def _scalar(loader: Any, node: yaml.Node, tag: str) -> str:
    if not isinstance(node, yaml.ScalarNode):
        raise _fail(f"a {tag} tag on a collection", node)
    value: str = node.value
    return value


def _construct_plain(loader: Any, node: yaml.Node) -> object:
    return resolve_plain(_scalar(loader, node, "plain"))


def _construct_str(loader: Any, node: yaml.Node) -> object:
    return _scalar(loader, node, "!!str")


def _typed(name: str) -> Any:
    """!!int, !!float, !!bool on a scalar (quoted or not): yaml.v3 resolves the text and fails
    when it is not of that type, except that an int is a fine !!float."""

    def construct(loader: Any, node: yaml.Node) -> object:
        value = resolve_plain(_scalar(loader, node, name))
        if name == "!!float" and type(value) is int:
            value = float(value)
        wanted = {"!!int": int, "!!float": float, "!!bool": bool}[name]
        if type(value) is not wanted:
            raise _fail(f"a value that is not a {name}", node)
        return value

    return construct


def _construct_null(loader: Any, node: yaml.Node) -> object:
    if resolve_plain(_scalar(loader, node, "!!null")) is not None:
        raise _fail("a value that is not a !!null", node)
    return None


def _construct_timestamp(loader: Any, node: yaml.Node) -> object:
    value = parse_yaml_timestamp(_scalar(loader, node, "!!timestamp"))
    if value is None:
        raise _fail("a value that is not a !!timestamp", node)
    return value


def _construct_binary(loader: Any, node: yaml.Node) -> object:
    try:
        return base64.b64decode("".join(_scalar(loader, node, "!!binary").split()), validate=True)
    except binascii.Error:
        raise _fail("!!binary value contains invalid base64 data", node) from None


def _construct_mapping(loader: Any, node: yaml.Node) -> object:
    if not isinstance(node, yaml.MappingNode):
        raise _fail("a !!map tag on a scalar or sequence", node)
    result: dict[str, object] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise _fail("a mapping key that is not a string (sops supports only string keys)", key_node)
        if key in result:
            raise _fail("a mapping key that is already defined", key_node)
        result[key] = loader.construct_object(value_node, deep=True)
    return result


def _construct_sequence(loader: Any, node: yaml.Node) -> object:
    if not isinstance(node, yaml.SequenceNode):
        raise _fail("a !!seq tag on a scalar or mapping", node)
    return [loader.construct_object(child, deep=True) for child in node.value]


def _construct_other(loader: Any, node: yaml.Node) -> object:
    """An unknown tag: yaml.v3 keeps the node's shape (a scalar as its text)."""
    if isinstance(node, yaml.MappingNode):
        return _construct_mapping(loader, node)
    if isinstance(node, yaml.SequenceNode):
        return _construct_sequence(loader, node)
    return _scalar(loader, node, "custom")


for _tag, _constructor in {
    PLAIN_TAG: _construct_plain,
    _STR: _construct_str,
    "tag:yaml.org,2002:int": _typed("!!int"),
    "tag:yaml.org,2002:float": _typed("!!float"),
    "tag:yaml.org,2002:bool": _typed("!!bool"),
    "tag:yaml.org,2002:null": _construct_null,
    "tag:yaml.org,2002:timestamp": _construct_timestamp,
    "tag:yaml.org,2002:binary": _construct_binary,
    "tag:yaml.org,2002:map": _construct_mapping,
    "tag:yaml.org,2002:seq": _construct_sequence,
    None: _construct_other,
}.items():
    _Loader.add_constructor(_tag, _constructor)


def load_documents(data: bytes) -> list[object]:
    """Every document of a YAML stream, typed as yaml.v3 types them (GoTime for timestamps).
    SopsError names the line and column of a problem, never the text there."""
    loader = _Loader(data)
    try:
        documents = []
        while loader.check_data():
            documents.append(loader.get_data())
        return documents
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise SopsError(f"not valid YAML for sops: {error.problem or 'a syntax error'}{where}") from None
    except yaml.YAMLError:
        raise SopsError("not valid YAML") from None
    except RecursionError:
        raise SopsError("the YAML nests too deeply (or an alias contains itself)") from None
    finally:
        loader.dispose()


class _Dumper(_DumperBase):  # type: ignore[misc]
    """PyYAML's safe dumper, with multi-line strings as literal blocks. Its YAML 1.1 resolvers
    quote `yes`, `on` and the like, so both YAML 1.1 and 1.2 readers see strings."""


def _represent_str(dumper: Any, data: str) -> Any:
    return dumper.represent_scalar(_STR, data, style="|" if "\n" in data else None)


_Dumper.add_representer(str, _represent_str)


def dump(documents: list[object]) -> bytes:
    """YAML text of the documents: block style, keys in their order, UTF-8 as is."""
    text: str = yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return text.encode("utf-8")
