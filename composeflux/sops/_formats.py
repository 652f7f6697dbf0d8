"""SOPS stores (YAML, JSON, dotenv, INI, binary), their metadata, and the decryption walk.

The walk is sops's `Tree.Decrypt`: depth first in document order, each mapping key adds a path
component and list items none, and every leaf (not null, not a comment) is either

    encrypted   as the file's one rule says: `ENC[AES256_GCM,data:..,iv:..,tag:..,type:..]`
                opened with AES-256-GCM, the data key, the 32-byte IV and AAD = the path joined
                by ":" plus a trailing ":" (`app2:db:password:`); "" is never encrypted; or
    plain       kept as parsed.

The MAC is SHA-512 (not an HMAC) over `ToBytes` of every leaf, decrypted or plain, in that order
(with `mac_only_encrypted`: a fixed 32-byte seed, then only the encrypted leaves), written as
upper-case hex; the file stores it encrypted with AAD = `lastmodified` as Go formats RFC 3339.

Rules (at most one; none means `unencrypted_suffix: _unencrypted`) test every key on the path:
the suffixes with str.endswith, the regexes with re.search (Go's "match anywhere"); the comment
regexes test the comments before a value, which only dotenv and INI files keep here (YAML
comments are not parsed: a YAML file with a comment rule is refused rather than misread).

How each store reads, as sops (and the Go libraries it uses) read them:

    yaml    yaml.v3 typing (see _yaml); metadata in the first document's top-level `sops`,
            removed from every document
    json    numbers: int when they fit int64, else float (sops 3.13.2; earlier sops read every
            number as a float, which changes the MAC only for plain integers beyond 2**53, so
            both readings are checked); duplicate keys are all walked, the last one is kept
    binary  a JSON envelope {"data": ENC[..], "sops": {..}}: the data is the file's bytes
    dotenv  lines split on "\\n", blank ones skipped, `#` starts a comment; KEY is everything
            before the first `=` (not trimmed), value the rest with `\\n` read as a newline;
            `sops_*` lines are the metadata, flattened (`sops_age__list_0__map_enc`)
    ini     gopkg.in/ini.v1 as sops configures it: an implicit DEFAULT section first, keys and
            values trimmed, `;`/`#` comments (inline ones too), quoted, triple-quoted and
            continued values, repeated sections kept apart (merged in the tree); metadata in
            `[sops]`, flattened without the prefix, `\\n` in its values read as newlines (sops
            3.13.0/1 wrote real newlines in `\"\"\"` values instead: both read)
"""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import hmac
import json
import math
import re
from base64 import b64decode
from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

from composeflux.sops import _yaml
from composeflux.sops._errors import SopsError
from composeflux.sops._golang import (
    INT64_MAX,
    INT64_MIN,
    GoTime,
    format_float_f,
    go_string,
    parse_bool,
    parse_float,
    parse_int,
    parse_rfc3339,
    to_bytes,
)
from composeflux.sops._result import Decrypted

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMATS = ("yaml", "json", "dotenv", "ini", "binary")
MAC_ONLY_ENCRYPTED_SEED = bytes.fromhex("8a3fd2ad54ce66527b1034f3d147be0b0b975b3bf44f72c6fdadec8176f27d69")
RULES = (
    "unencrypted_suffix", "encrypted_suffix", "unencrypted_regex", "encrypted_regex",
    "unencrypted_comment_regex", "encrypted_comment_regex",
)
OTHER_KEY_TYPES = ("kms", "gcp_kms", "azure_kv", "hc_vault", "hckms")
DEFAULT_RULE = ("unencrypted_suffix", "_unencrypted")
MAX_NODES = 1_000_000  # values walked per file: far above any real file, far below an alias bomb
_ENC = re.compile(r"ENC\[AES256_GCM,data:(.+),iv:(.+),tag:(.+),type:(.+)\]")


class Pairs(list[tuple[object, object]]):
    """A mapping as the store read it: (key, value) pairs in order, repeated keys and comments
    (keys of type Comment) kept. Trees of YAML files use dicts instead."""


class Comment(NamedTuple):
    text: str


# --- detection --------------------------------------------------------------------------------

_YAML_SOPS = re.compile(rb"^sops:[ \t]*(?:#[^\n]*)?\r?$", re.MULTILINE)
_INI_SOPS = re.compile(rb"^[ \t]*\[sops\][ \t]*\r?$", re.MULTILINE)
_DOTENV_SOPS = re.compile(rb"^sops_(?:mac|version|lastmodified)=", re.MULTILINE)


def looks_encrypted(data: bytes) -> bool:
    """A cheap test by content, without parsing: True when the data has an encrypted SOPS value
    and the word sops (every SOPS file has both: its MAC is an ENC[...] value)."""
    return b"ENC[AES256_GCM," in data and b"sops" in data


def detect_format(data: bytes, filename: str) -> str | None:
    """The SOPS store of a file by its content, or None when it is no SOPS file. Never raises.

    JSON: an object with a "sops" object; "binary" when its only other key is "data" and the name
    does not end in .json. YAML: a top-level `sops:` mapping and a lastmodified. INI: a [sops]
    section. dotenv: a sops_mac=, sops_version= or sops_lastmodified= line."""
    try:
        if data.lstrip()[:1] == b"{":
            try:
                document = json.loads(data.decode("utf-8", "replace"))
            except (ValueError, RecursionError):
                document = None
            if isinstance(document, dict) and isinstance(document.get("sops"), dict):
                if set(document) == {"data", "sops"} and not filename.lower().endswith(".json"):
                    return "binary"
                return "json"
        if _YAML_SOPS.search(data) and b"lastmodified" in data:
            return "yaml"
        if _INI_SOPS.search(data):
            return "ini"
        if _DOTENV_SOPS.search(data):
            return "dotenv"
    except (TypeError, AttributeError):  # not bytes at all
        return None
    return None


# --- metadata ---------------------------------------------------------------------------------


# Plain records are NamedTuples: a dataclass costs ~1 ms of import time each.


class AgeKey(NamedTuple):
    recipient: str
    enc: str


class PgpKey(NamedTuple):
    fingerprint: str
    enc: str


class KeyGroup(NamedTuple):
    age: tuple[AgeKey, ...]
    pgp: tuple[PgpKey, ...]
    other: tuple[tuple[str, int], ...]  # (type, count) of the key types composeflux cannot use

    def has_keys(self) -> bool:
        return bool(self.age or self.pgp or self.other)


class Metadata(NamedTuple):
    groups: tuple[KeyGroup, ...]
    lastmodified: str  # as Go's RFC 3339 formatting writes it (the MAC's AAD), "" when absent or invalid
    mac: str
    rule: tuple[str, str]
    mac_only_encrypted: bool


def _plain(value: object) -> object:
    """Pairs (JSON) as dicts, recursively, for reading metadata."""
    if isinstance(value, Pairs):
        return {str(key): _plain(item) for key, item in value if not isinstance(key, Comment)}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _text(mapping: dict[str, object], name: str) -> str:
    """A string field, typed weakly as sops's mapstructure does (numbers and bools as text)."""
    value = mapping.get(name)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float_f(value)
    if isinstance(value, GoTime):
        return value.rfc3339()
    raise SopsError(f"the sops metadata field {name} is not a string")


def _flag(mapping: dict[str, object], name: str) -> bool:
    value = mapping.get(name)
    if value is None or value == "":
        return False
    if isinstance(value, (bool, int, float)):
        return bool(value)
    if isinstance(value, str):
        try:
            return parse_bool(value)
        except ValueError:
            raise SopsError(f"the sops metadata field {name} is not a bool") from None
    raise SopsError(f"the sops metadata field {name} is not a bool")


def _entries(mapping: dict[str, object], name: str) -> list[dict[str, object]]:
    value = mapping.get(name)
    if value is None or value == {}:  # JSON null; an empty node of flattened metadata
        return []
    if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
        raise SopsError(f"the sops metadata field {name} is not a list of mappings")
    return value


def _group(mapping: dict[str, object]) -> KeyGroup:
    age = tuple(AgeKey(_text(entry, "recipient"), _text(entry, "enc")) for entry in _entries(mapping, "age"))
    pgp = tuple(PgpKey(_text(entry, "fp"), _text(entry, "enc")) for entry in _entries(mapping, "pgp"))
    other = tuple((kind, len(entries)) for kind in OTHER_KEY_TYPES if (entries := _entries(mapping, kind)))
    return KeyGroup(age, pgp, other)


def metadata_from(raw: object) -> Metadata:
    """sops's metadata (stores.metadata.ToInternal) from the store's `sops` mapping."""
    mapping = _plain(raw)
    if not isinstance(mapping, dict):
        raise SopsError("the sops metadata is not a mapping")
    rules = [(name, value) for name in RULES if (value := _text(mapping, name))]
    if len(rules) > 1:
        raise SopsError(f"the file sets more than one encryption rule ({', '.join(name for name, _ in rules)}); sops allows one")
    rule = rules[0] if rules else DEFAULT_RULE
    if rule[0].endswith("regex"):
        try:
            re.compile(rule[1])
        except re.error:
            raise SopsError(f"the file's {rule[0]} is not a valid regular expression") from None
    top = _group(mapping)
    groups = (top,) if top.has_keys() else tuple(group for entry in _entries(mapping, "key_groups") if (group := _group(entry)).has_keys())
    try:
        lastmodified = parse_rfc3339(_text(mapping, "lastmodified")).rfc3339()
    except ValueError:
        lastmodified = ""
    return Metadata(groups, lastmodified, _text(mapping, "mac"), rule, _flag(mapping, "mac_only_encrypted"))


def _tokens(key: str) -> list[str | int]:
    """stores.tokenize: `age__list_0__map_enc` -> ["age", 0, "enc"]."""
    parts = re.split(r"(__map_|__list_)", key)
    tokens: list[str | int] = [parts[0]]
    for separator, part in zip(parts[1::2], parts[2::2], strict=True):
        tokens.append(part if separator == "__map_" else int(part) if part.isdigit() else 0)  # Go ignores Atoi's error: 0
    return tokens


def unflatten(items: Iterable[tuple[str, object]]) -> dict[str, object]:
    """stores.unflattenTreeBranch: flattened metadata keys back into nested mappings and lists
    (list indices must be dense from 0; a key cannot be both a value and a container)."""
    root: dict[object, object] = {}
    leaf = object()
    for key, value in items:
        node = root
        for token in _tokens(key):
            child = node.setdefault(token, {})
            assert isinstance(child, dict)
            node = child
        if leaf in node:
            raise SopsError("the sops metadata repeats a key")
        node[leaf] = value

    def build(node: dict[object, object]) -> object:
        if leaf in node:
            if len(node) > 1:
                raise SopsError("the sops metadata uses a key both as a value and as a container")
            return node[leaf]
        keys = list(node)
        if not keys:
            return {}
        if all(isinstance(k, int) for k in keys):
            if sorted(keys) != list(range(len(keys))):  # type: ignore[type-var]  # all ints here
                raise SopsError("the sops metadata has an incomplete list")
            return [build(node[i]) for i in range(len(keys))]  # type: ignore[arg-type]
        if not all(isinstance(k, str) for k in keys):
            raise SopsError("the sops metadata uses a key both as a list and as a mapping")
        return {str(k): build(node[k]) for k in sorted(keys)}  # type: ignore[arg-type,type-var]

    result = build(root)
    assert isinstance(result, dict)
    return result


# --- stores -----------------------------------------------------------------------------------


class Parsed(NamedTuple):
    """A SOPS file read by its store: the branches to walk and the metadata."""

    format: str
    branches: tuple[object, ...]  # yaml: the documents; json, binary, dotenv: one branch; ini: none
    metadata: Metadata
    sections: tuple[tuple[str, Pairs], ...] = ()  # ini: every section but [sops], in order


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SopsError("the file is not UTF-8 text") from None


def _parse_yaml(data: bytes) -> Parsed:
    documents = _yaml.load_documents(data)
    metadata: object = None
    branches = []
    for index, document in enumerate(documents):
        document = {} if document is None else document
        if not isinstance(document, dict):
            raise SopsError("a YAML document whose top level is not a mapping (sops supports only mappings)")
        if "sops" in document:
            value = document.pop("sops")
            if index == 0:
                metadata = value
        branches.append(document)
    if metadata is None:
        raise SopsError("no sops metadata (a top-level sops mapping in the first YAML document)")
    return Parsed("yaml", tuple(branches), metadata_from(metadata))


def _json_int(text: str) -> object:
    number = int(text)
    return number if INT64_MIN <= number <= INT64_MAX else _json_float(text)


def _json_float(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise SopsError("a JSON number is out of range")
    return number


def _json_constant(text: str) -> object:
    raise SopsError(f"JSON has no {text}")


def _parse_json(data: bytes, format: str) -> Parsed:
    try:
        document = json.loads(
            data.decode("utf-8", "replace"),
            object_pairs_hook=Pairs, parse_int=_json_int, parse_float=_json_float, parse_constant=_json_constant,
        )
    except json.JSONDecodeError as error:
        raise SopsError(f"not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})") from None
    except RecursionError:
        raise SopsError("the JSON nests too deeply") from None
    if not isinstance(document, Pairs):
        raise SopsError("the top level of the JSON is not an object (sops supports only objects)")
    metadata = [value for key, value in document if key == "sops"]
    if len(metadata) != 1:
        raise SopsError("no sops metadata (a top-level sops object)" if not metadata else "the sops metadata appears twice")
    if not isinstance(metadata[0], Pairs):
        raise SopsError("the sops metadata is not an object")
    branch = Pairs(item for item in document if item[0] != "sops")
    return Parsed(format, (branch,), metadata_from(metadata[0]))


def _parse_dotenv(data: bytes) -> Parsed:
    branch = Pairs()
    metadata: list[tuple[str, object]] = []
    for number, line in enumerate(_decode(data).split("\n"), 1):
        if not line:
            continue
        if line[0] == "#":
            branch.append((Comment(line[1:]), None))
            continue
        key, separator, value = line.partition("=")
        if not separator:
            raise SopsError(f"line {number} is not KEY=value")
        value = value.replace("\\n", "\n")
        if key.startswith("sops_"):
            metadata.append((key[len("sops_") :], value))
        else:
            branch.append((key, value))
    if not metadata:
        raise SopsError("no sops metadata (sops_* lines)")
    return Parsed("dotenv", (branch,), metadata_from(unflatten(metadata)))


def _ini_key(line: str, number: int) -> tuple[str, int]:
    """go-ini's readKeyName: the key (trimmed; quotes " ` or \"\"\" allowed) and where its value starts."""
    quote = ""
    if line[0] == '"':
        quote = '"""' if len(line) > 6 and line.startswith('"""') else '"'
    elif line[0] == "`":
        quote = "`"
    start = len(quote)
    if quote:
        end = line.find(quote, start)
        if end == -1:
            raise SopsError(f"line {number}: a key without its closing quote")
        delimiter = min((i for i in (line.find("=", end + start), line.find(":", end + start)) if i >= 0), default=-1)
        if delimiter < 0:
            raise SopsError(f"line {number} is not key = value")
        return line[start:end].strip(), delimiter + 1
    delimiter = min((i for i in (line.find("="), line.find(":")) if i >= 0), default=-1)
    if delimiter < 0:
        raise SopsError(f"line {number} is not key = value")
    return line[:delimiter].strip(), delimiter + 1


def _first_comment_character(text: str) -> int:
    return min((i for i in (text.find("#"), text.find(";")) if i >= 0), default=-1)


def _surrounded(text: str, quote: str) -> bool:
    return len(text) >= 2 and text[0] == quote and text[-1] == quote and text.find(quote, 1) == len(text) - 1


def _ini_value(rest: str, lines: list[str], index: int, comment: list[str]) -> tuple[str, int]:
    """go-ini's readValue (sops's options): the value and the index of the next line to read.
    Inline comments go to `comment`, as go-ini attaches them to the key."""
    line = rest.lstrip()
    if not line:
        return "", index
    quote = '"""' if len(line) > 3 and line.startswith('"""') else "`" if line[0] == "`" else ""
    if quote:
        start = len(quote)
        end = line[start:].rfind(quote)
        if end != -1:
            return line[start : start + end], index
        value = line[start:]
        while index < len(lines):
            following = lines[index]
            index += 1
            end = following.rfind(quote)
            if end != -1:
                value += following[:end]
                position = _first_comment_character(following[end:])
                if position >= 0:
                    comment.append(following[end:][position:].strip())
                return value, index
            value += following
        raise SopsError(f"line {index}: a quoted value without its closing quote")
    line = line.strip()
    if line.endswith("\\"):
        value = line[:-1]
        while index < len(lines):
            following = lines[index].strip()
            index += 1
            if not following:
                break
            value += following
            if not value.endswith("\\"):
                break
            value = value[:-1]
        return value, index
    position = _first_comment_character(line)
    if position >= 0:
        comment.append(line[position:])
        line = line[:position].strip()
    if _surrounded(line, "'") or _surrounded(line, '"'):
        line = line[1:-1]
    return line, index


def _strip_comment(text: str) -> str:
    """The INI store's stripCommentChar."""
    if text.startswith(";"):
        return text.lstrip("; ")
    if text.startswith("#"):
        return text.lstrip("# ")
    return text


def ini_sections(text: str) -> list[tuple[str, Pairs]]:
    """gopkg.in/ini.v1's reading of an INI file with sops's options (AllowNonUniqueSections):
    every section in order, the implicit DEFAULT first, each as Pairs with its comments (the
    section's first, a key's right after the key, as sops's INI store lists them)."""
    text = text.removeprefix("\ufeff")
    pieces = text.split("\n")
    lines = [piece + "\n" for piece in pieces[:-1]] + ([pieces[-1]] if pieces[-1] else [])
    sections: list[tuple[str, str, dict[str, tuple[str, str]]]] = []
    name, section_comment = "DEFAULT", ""
    keys: dict[str, tuple[str, str]] = {}
    comment: list[str] = []
    counter = 1
    index = 0
    while index < len(lines):
        line = lines[index].lstrip()
        index += 1
        if not line:
            continue
        if line[0] in "#;":
            comment.append(line)
            continue
        if line[0] == "[":
            close = line.rfind("]")
            if close == -1:
                raise SopsError(f"line {index}: a section header without its closing ]")
            if close == 1:
                raise SopsError(f"line {index}: a section without a name")
            position = _first_comment_character(line[close + 1 :])
            if position >= 0:
                comment.append(line[close + 1 :][position:])
            sections.append((name, section_comment, keys))
            name, section_comment, keys = line[1:close], "".join(comment).strip(), {}
            comment, counter = [], 1
            continue
        key, offset = _ini_key(line, index)
        if key == "-":
            key, counter = f"#{counter}", counter + 1
        value, index = _ini_value(line[offset:], lines, index, comment)
        if not key:
            raise SopsError(f"line {index}: a key without a name")
        keys[key] = (value, "".join(comment).strip())
        comment = []
    sections.append((name, section_comment, keys))
    result = []
    for name, section_comment, keys in sections:
        pairs = Pairs()
        if section_comment:
            pairs.append((Comment(_strip_comment(section_comment)), None))
        for key, (value, key_comment) in keys.items():
            pairs.append((key, value))
            if key_comment:
                pairs.append((Comment(_strip_comment(key_comment)), None))
        result.append((name, pairs))
    return result


def _parse_ini(data: bytes) -> Parsed:
    sections = ini_sections(_decode(data))
    metadata = [pairs for name, pairs in sections if name == "sops"]
    if len(metadata) != 1:
        raise SopsError("no sops metadata (a [sops] section)" if not metadata else "the [sops] section appears twice")
    items = [(str(key), str(value).replace("\\n", "\n")) for key, value in metadata[0] if not isinstance(key, Comment)]
    kept = tuple((name, pairs) for name, pairs in sections if name != "sops")
    return Parsed("ini", (), metadata_from(unflatten(items)), kept)


def parse(data: bytes, filename: str) -> Parsed:
    """Read a SOPS file with the store its content calls for. SopsError (without the file name)
    when it is not a SOPS file or its store cannot read it."""
    format = detect_format(data, filename)
    if format is None:
        raise SopsError("not a SOPS file (no sops metadata found)")
    if format == "yaml":
        return _parse_yaml(data)
    if format in ("json", "binary"):
        return _parse_json(data, format)
    if format == "dotenv":
        return _parse_dotenv(data)
    return _parse_ini(data)


# --- the walk ---------------------------------------------------------------------------------


def _path_name(path: list[str]) -> str:
    return ":".join(path) if path else "(the top level)"


class _Walker:
    """One pass of sops's Tree.Decrypt over a file's branches: decrypts, hashes, collects."""

    def __init__(self, key: bytes, metadata: Metadata, *, raw_strings: bool, json_numbers: bool) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead: AESGCM = AESGCM(key)
        self._rule, self._rule_value = metadata.rule
        self._pattern = re.compile(self._rule_value) if self._rule.endswith("regex") else None
        self._mac_only = metadata.mac_only_encrypted
        self._hash = hashlib.sha512(MAC_ONLY_ENCRYPTED_SEED if self._mac_only else b"")
        # JSON as sops < 3.13.2 read it (every number a float): a second hash, used only when
        # some plain integer is spelled differently that way.
        self._legacy = self._hash.copy() if json_numbers else None
        self._legacy_differs = False
        self._raw_strings = raw_strings
        self._nodes = 0
        self.secrets: dict[str, None] = {}
        self.comments: list[tuple[str, str]] = []

    def _should_encrypt(self, path: list[str], stack: list[list[str]], is_comment: bool) -> bool:
        """sops's shouldBeEncrypted, for the file's one rule."""
        rule, value, pattern = self._rule, self._rule_value, self._pattern
        if rule == "unencrypted_suffix":
            return not any(key.endswith(value) for key in path)
        if rule == "encrypted_suffix":
            return any(key.endswith(value) for key in path)
        assert pattern is not None
        if rule == "unencrypted_regex":
            return not any(pattern.search(key) for key in path)
        if rule == "encrypted_regex":
            return any(pattern.search(key) for key in path)
        if rule == "unencrypted_comment_regex":
            return not any(pattern.search(text) for level in stack for text in level)
        # encrypted_comment_regex: a comment that matches is not encrypted itself, only what follows
        last = (len(stack) - 1, len(stack[-1]) - 1) if stack else (-1, -1)
        return any(
            pattern.search(text) for i, level in enumerate(stack) for j, text in enumerate(level) if not (is_comment and (i, j) == last)
        )

    def _open(self, text: str, path: list[str]) -> tuple[str, bytes]:
        """(type, plaintext) of an ENC[...] value. SopsError naming the path when it fails."""
        from cryptography.exceptions import InvalidTag

        name = _path_name(path)
        match = _ENC.match(text)
        if match is None:
            raise SopsError(f"{name}: the value is not encrypted, but the file's rules say it must be")
        try:
            data, iv, tag = (b64decode(part, validate=True) for part in match.group(1, 2, 3))
        except (binascii.Error, ValueError):
            raise SopsError(f"{name}: the encrypted value is malformed (bad base64)") from None
        try:
            plaintext = self._aead.decrypt(iv, data + tag, (":".join(path) + ":").encode("utf-8", "surrogatepass"))
        except InvalidTag:
            raise SopsError(
                f"{name}: the value failed authentication (it, or its key path, was changed after encryption, or the data key is wrong)"
            ) from None
        except ValueError:  # an IV length AES-GCM refuses
            raise SopsError(f"{name}: the encrypted value is malformed (bad IV)") from None
        return match.group(4), plaintext

    def _decrypt(self, text: str, path: list[str]) -> tuple[object, object]:
        """(the value sops hashes, the value for the tree) of an encrypted leaf."""
        kind, plaintext = self._open(text, path)
        name = _path_name(path)
        try:
            if kind == "bytes":
                self._secret_bytes(plaintext)
                return plaintext, plaintext
            if kind == "str" and self._raw_strings:
                self._secret_bytes(plaintext)
                return plaintext, plaintext
            decoded = plaintext.decode("utf-8")
            value: object
            if kind in ("str", "comment"):
                value = decoded
            elif kind == "int":
                value = parse_int(decoded)
            elif kind == "float":
                value = parse_float(decoded)
            elif kind == "bool":
                value = parse_bool(decoded)
            elif kind == "time":
                value = parse_rfc3339(decoded)
            else:
                raise SopsError(f"{name}: the encrypted value has the unknown type {kind!r}")
        except (ValueError, UnicodeDecodeError):
            raise SopsError(f"{name}: the decrypted value is not a valid {kind}") from None
        self.secrets[go_string(value)] = None
        return value, value.to_datetime() if isinstance(value, GoTime) else value

    def _secret_bytes(self, plaintext: bytes) -> None:
        with contextlib.suppress(UnicodeDecodeError):  # binary content cannot show up in a text log as it is
            self.secrets[plaintext.decode("utf-8")] = None

    def _hash_leaf(self, value: object) -> None:
        data = to_bytes(value)
        self._hash.update(data)
        if self._legacy is not None:
            if type(value) is int:
                legacy = format_float_f(float(value)).encode()
                self._legacy_differs |= legacy != data
                data = legacy
            self._legacy.update(data)

    def leaf(self, value: object, path: list[str], stack: list[list[str]]) -> object:
        encrypted = self._should_encrypt(path, stack, False)
        if encrypted:
            if not isinstance(value, str):
                raise SopsError(f"{_path_name(path)}: the value is not encrypted, but the file's rules say it must be")
            hashed, result = self._decrypt(value, path) if value else ("", "")
        elif isinstance(value, int) and not isinstance(value, bool):
            if not INT64_MIN <= value <= INT64_MAX:
                raise SopsError(f"{_path_name(path)}: an integer beyond 64 bits, which sops cannot handle")
            hashed = result = value
        elif isinstance(value, (str, bool, float, bytes, GoTime)):
            hashed = value
            result = value.to_datetime() if isinstance(value, GoTime) else value
        else:
            raise SopsError(f"{_path_name(path)}: a value of a type sops cannot handle")
        if encrypted or not self._mac_only:
            self._hash_leaf(hashed)
        return result

    def comment(self, comment: Comment, path: list[str], stack: list[list[str]]) -> None:
        """An encrypted comment is decrypted when it can be; one that cannot stays as it is
        (sops does the same: files from old versions have plain comments). Never in the MAC."""
        text = comment.text
        if self._should_encrypt(path, stack, True) and text:
            with contextlib.suppress(SopsError, UnicodeDecodeError):
                text = self._open(text, path)[1].decode("utf-8")
        self.comments.append((":".join(path) + ":", text))

    def branch(self, items: Iterable[tuple[object, object]], path: list[str], stack: list[list[str]]) -> dict[str, object]:
        level: list[str] = []
        stack = [*stack, level]
        result: dict[str, object] = {}
        for key, value in items:
            if isinstance(key, Comment):
                level.append(key.text)
                self.comment(key, path, stack)
                continue
            assert isinstance(key, str)
            result[key] = self.value(value, [*path, key], stack)
            level.clear()
        return result

    def value(self, node: object, path: list[str], stack: list[list[str]]) -> object:
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise SopsError(f"the file has more than {MAX_NODES} values (aliases expanding without end?)")
        if isinstance(node, dict):
            return self.branch(node.items(), path, stack)
        if isinstance(node, Pairs):
            return self.branch(node, path, stack)
        if isinstance(node, list):
            inner = [*stack, []]
            return [self.value(item, path, inner) for item in node]
        if node is None:
            return None
        return self.leaf(node, path, stack)

    def verify(self, metadata: Metadata) -> None:
        """Compare the MAC this walk computed with the one the file stores."""
        if not metadata.mac:
            raise SopsError("the file has no MAC (sops.mac), so its integrity cannot be checked")
        if not metadata.lastmodified:
            raise SopsError("the file's lastmodified is missing or not an RFC 3339 time, so its MAC cannot be checked")
        from cryptography.exceptions import InvalidTag

        match = _ENC.match(metadata.mac)
        try:
            if match is None:
                raise ValueError("not ENC[...]")
            data, iv, tag = (b64decode(part, validate=True) for part in match.group(1, 2, 3))
            stored = self._aead.decrypt(iv, data + tag, metadata.lastmodified.encode())
        except (binascii.Error, ValueError, InvalidTag):
            raise SopsError(
                "MAC mismatch: the stored MAC cannot be decrypted (the file's lastmodified or MAC was changed after it was encrypted)"
            ) from None
        computed = self._hash.hexdigest().upper().encode()
        if hmac.compare_digest(stored, computed):
            return
        if self._legacy is not None and self._legacy_differs and hmac.compare_digest(stored, self._legacy.hexdigest().upper().encode()):
            return
        raise SopsError("MAC mismatch: the file was changed after it was encrypted")


def decrypt_parsed(
    parsed: Parsed, key: bytes, *, verify_mac: bool = True, comments: list[tuple[str, str]] | None = None
) -> Decrypted:
    """Decrypt a parsed file with its data key. `comments`, when given, receives every comment
    the store kept (dotenv and INI) as (AAD, text), decrypted where it was encrypted."""
    if len(key) != 32:
        raise SopsError("the data key is not 32 bytes")
    if parsed.format == "yaml" and parsed.metadata.rule[0].endswith("comment_regex"):
        raise SopsError(f"the file's {parsed.metadata.rule[0]} rule needs YAML comments, which are not supported")
    walker = _Walker(key, parsed.metadata, raw_strings=parsed.format == "binary", json_numbers=parsed.format in ("json", "binary"))
    tree: object
    if parsed.format == "ini":
        sections: dict[str, dict[str, object]] = {}
        for name, pairs in parsed.sections:
            sections.setdefault(name, {}).update(walker.branch(pairs, [name], [[]]))
        tree = sections
    else:
        documents = [walker.value(branch, [], []) for branch in parsed.branches]
        tree = documents[0] if len(documents) == 1 else documents
        if parsed.format == "binary":
            assert isinstance(tree, dict)
            data = tree.get("data")
            if isinstance(data, str):
                data = data.encode("utf-8")
            if not isinstance(data, bytes):
                raise SopsError("the binary file's data is missing")
            tree = data
    if verify_mac:
        walker.verify(parsed.metadata)
    if comments is not None:
        comments.extend(walker.comments)
    return Decrypted(parsed.format, tree, tuple(walker.secrets))


def decrypt_with_key(data: bytes, filename: str, key: bytes, *, verify_mac: bool = True) -> Decrypted:
    """Decrypt a SOPS file whose data key is known (tests, tools). SopsError names the file."""
    try:
        return decrypt_parsed(parse(data, filename), key, verify_mac=verify_mac)
    except SopsError as error:
        raise SopsError(f"{filename}: {error}") from None
