"""A decrypted SOPS file, and the two ways a container can be given it: variables or a file."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json

from composeflux.sops import _yaml
from composeflux.sops._errors import SopsError
from composeflux.sops._golang import GoTime, format_float_json, go_string


@dataclasses.dataclass(frozen=True)
class Decrypted:
    """The plaintext of a SOPS file, its metadata removed.

    format   "yaml", "json", "dotenv", "ini" or "binary" (the store it was read with)
    tree     yaml/json: the document with native types, mapping order kept (a list of documents
             when a YAML file has several); dotenv: dict[str, str]; ini: dict[section, dict[str,
             str]] (with the implicit "DEFAULT" section first, as sops reads INI); binary: bytes.
             Comments are not kept.
    secrets  the plaintext of every value that was encrypted, once each, in the form
             `variables()` writes it, for the caller's masker. Binary content is included only
             when it is UTF-8 text.
    """

    format: str
    tree: object = dataclasses.field(repr=False)  # plaintext: never in a repr that ends up in a log
    secrets: tuple[str, ...] = dataclasses.field(repr=False)

    def variables(self) -> dict[str, str]:
        """The file as KEY=value pairs for an environment or env_file: dotenv's own pairs; for
        YAML and JSON the top-level scalars, written as sops writes dotenv (bools true/false,
        floats in Go's %G with a decimal, null as ""). SopsError for INI and binary files, for
        several YAML documents, and naming the key of a nested (mapping or list) value."""
        if self.format == "dotenv":
            assert isinstance(self.tree, dict)
            return dict(self.tree)
        if self.format not in ("yaml", "json"):
            raise SopsError(f"a {self.format} file cannot be used as variables (only dotenv, YAML and JSON files can)")
        if not isinstance(self.tree, dict):
            raise SopsError("a YAML file with several documents cannot be used as variables")
        result = {}
        for key, value in self.tree.items():
            if isinstance(value, (dict, list)):
                raise SopsError(f"{key}: a nested value cannot be a variable (only top-level scalars can)")
            result[key] = go_string(value)
        return result

    def content(self) -> bytes:
        """The file as a container should see it, decrypted, in its own format: binary as is;
        dotenv KEY=value lines (newlines in values written `\\n`, as sops does); YAML in block
        style, keys in order; JSON tab-indented with a final newline (as sops writes it); INI
        `[section]` blocks of `key = value`."""
        if self.format == "binary":
            assert isinstance(self.tree, bytes)
            return self.tree
        if self.format == "dotenv":
            assert isinstance(self.tree, dict)
            return "".join(f"{key}={go_string(value).replace(chr(10), chr(92) + 'n')}\n" for key, value in self.tree.items()).encode()
        if self.format == "yaml":
            return _yaml.dump(self.tree if isinstance(self.tree, list) else [self.tree])
        if self.format == "json":
            return (_json(self.tree, "") + "\n").encode()
        if self.format == "ini":
            assert isinstance(self.tree, dict)
            return _ini(self.tree).encode()
        raise SopsError(f"unknown format {self.format!r}")


def _json_string(text: str) -> str:
    """A JSON string as Go's encoding/json writes it: UTF-8 kept, <, >, & and U+2028/9 escaped."""
    encoded = json.dumps(text, ensure_ascii=False)
    for character, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        encoded = encoded.replace(character, escape)
    return encoded


def _json(value: object, indent: str) -> str:
    """JSON as sops emits it: json.Indent with a tab, floats as Go writes them (no `.0`)."""
    inner = indent + "\t"
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = (f"{inner}{_json_string(str(key))}: {_json(item, inner)}" for key, item in value.items())
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        return "[\n" + ",\n".join(inner + _json(item, inner) for item in value) + "\n" + indent + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float_json(value)
    if isinstance(value, str):
        return _json_string(value)
    if isinstance(value, bytes):
        return _json_string(base64.b64encode(value).decode())
    if isinstance(value, datetime.datetime):
        return _json_string(GoTime.from_datetime(value).rfc3339nano())  # json.Marshal of a time.Time
    raise SopsError(f"a value of type {type(value).__name__} cannot be written as JSON")


def _ini_value(value: str) -> str:
    """go-ini's quoting when it writes a value: multi-line or with a backtick in triple quotes,
    with a comment character in backticks, with surrounding blanks in double quotes."""
    if "\n" in value or "`" in value:
        return f'"""{value}"""'
    if "#" in value or ";" in value:
        return f"`{value}`"
    if value.strip() != value:
        return f'"{value}"'
    return value


def _ini(tree: dict[object, object]) -> str:
    blocks = []
    for section, values in tree.items():
        assert isinstance(values, dict)
        if section == "DEFAULT" and not values:
            continue
        lines = [] if section == "DEFAULT" else [f"[{section}]"]
        lines += [f"{key} = {_ini_value(go_string(value))}" for key, value in values.items()]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)
