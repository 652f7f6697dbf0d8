"""composeflux.sops against files the real `sops` wrote (../shared/sops-vectors, with their keys
and expected.json as the oracle), files tampered with here, and files the bench's test-only
encryptor writes for what no vector covers (INI with age, types, mac_only, comment rules)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest  # type: ignore[import-not-found,unused-ignore]  # the lint venv has no pytest
import yaml

from composeflux import sops
from composeflux.sops import _age, _formats, _golang, _yaml
from tests import sopsenc

REPO_ROOT = Path(__file__).resolve().parents[2]
VECTORS = REPO_ROOT.parent / "shared" / "sops-vectors"
EXPECTED: dict[str, dict[str, Any]] = {k: v for k, v in json.loads((VECTORS / "expected.json").read_text()).items() if k != "_about"}
FLUX = "fluxcd-kustomize-controller/internal/controller/testdata/sops"
MOCK = VECTORS / "getsops-sops/age-keysource-test-constants"
NESTED = f"{FLUX}/inside/secret.yaml#data.key"
PQ = f"{FLUX}/algorithms/age-pq.yaml"
BROKEN = "isindir-sops-secrets-operator/config/age-test-key/01-test-secrets.yaml"
NO_MAC = "getsops-sops/functional-tests/res/no_mac.yaml"
DECRYPTABLE = sorted(name for name, entry in EXPECTED.items() if "decrypted" in entry)
AGE = [name for name in DECRYPTABLE if EXPECTED[name]["unwrapped_with"].startswith("age ")]


_Test = TypeVar("_Test", bound=Callable[..., None])


def parametrize(names: str | tuple[str, ...], values: Any) -> Callable[[_Test], _Test]:
    """pytest.mark.parametrize, typed (for mypy --strict, which does not see pytest's types here)."""
    decorator: Callable[[_Test], _Test] = pytest.mark.parametrize(names, values)
    return decorator




def vector(name: str) -> tuple[bytes, str]:
    """A fixture's bytes and file name; the Flux inner document is base64 in a plain Secret."""
    path, _, inner = name.partition("#")
    data = (VECTORS / path).read_bytes()
    if inner:
        secret: Any = _yaml.load_documents(data)[0]
        data = base64.b64decode(secret["data"]["key"])
        return data, "key"
    return data, Path(path).name


def identities(name: str) -> sops.Identities:
    """The age identity the README names for a fixture (expected.json's unwrapped_with)."""
    key_file = search(r"\(([^)]*)\)$", EXPECTED[name]["unwrapped_with"]).group(1)
    return sops.Identities(age=tuple(sops.parse_age_identities((VECTORS / key_file).read_text())), use_gpg=False)


def identity_file(relative: str) -> sops.Identities:
    return sops.Identities(age=tuple(sops.parse_age_identities((VECTORS / relative).read_text())), use_gpg=False)


def search(pattern: str, text: str, flags: int = 0) -> re.Match[str]:
    match = re.search(pattern, text, flags)
    assert match is not None, pattern
    return match


def without_comments(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: without_comments(v) for k, v in tree.items() if not k.startswith("#comment")}
    if isinstance(tree, list):
        return [without_comments(item) for item in tree]
    return tree


def leaves(tree: object, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], bytes]]:
    """(path, ToBytes) of every leaf in document order; list items add no path component."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from leaves(value, (*path, key))
    elif isinstance(tree, list):
        for item in tree:
            yield from leaves(item, path)
    elif tree is not None:
        yield path, _golang.to_bytes(tree)


def as_tree(result: sops.Decrypted) -> Any:
    tree: Any = result.tree
    return {"data": tree.decode()} if result.format == "binary" else tree


# --- every vector --------------------------------------------------------------------------------


@parametrize("name", DECRYPTABLE)
def test_vector_with_its_data_key(name: str) -> None:
    """The AES and MAC layer, with expected.json's data key: the tree, every encrypted leaf's
    plaintext at its path (comments of dotenv/INI with their AAD), the MAC checked."""
    entry = EXPECTED[name]
    data, filename = vector(name)
    comments: list[tuple[str, str]] = []
    parsed = _formats.parse(data, filename)
    result = _formats.decrypt_parsed(parsed, bytes.fromhex(entry["data_key_hex"]), verify_mac=name != NO_MAC, comments=comments)
    assert result.format == entry["format"].split(" ")[0]
    assert without_comments(as_tree(result)) == without_comments(entry["decrypted"])
    remaining = iter(leaves(as_tree(result)))
    for value in entry["values"]:
        if value.get("comment"):
            assert (value["aad"], value["plaintext"]) in comments
        else:
            assert (tuple(value["path"]), value["plaintext"].encode()) in remaining, value["aad"]
            if value["type"] == "str":
                assert value["plaintext"] in result.secrets


@parametrize("name", AGE)
def test_age_vector_with_its_identity(name: str) -> None:
    data, filename = vector(name)
    result = sops.decrypt(data, filename, identities(name))
    assert without_comments(as_tree(result)) == without_comments(EXPECTED[name]["decrypted"])


def test_sops_nix_opens_with_either_age_identity() -> None:
    name = "Mic92-sops-nix/pkgs/sops-install-secrets/test-assets/secrets.yaml"
    data, filename = vector(name)
    derived = identity_file("Mic92-sops-nix/pkgs/sops-install-secrets/test-assets/ssh-ed25519-key.age-identity.derived.txt")
    assert sops.decrypt(data, filename, derived).tree == EXPECTED[name]["decrypted"]


def test_post_quantum_recipient_is_refused_clearly() -> None:
    data, filename = vector(PQ)
    with pytest.raises(sops.SopsError, match=r"post-quantum \(mlkem768x25519\).*not supported") as error:
        sops.decrypt(data, filename, identity_file(f"{FLUX}/keys/age-pq.txt"))
    assert filename in str(error.value)


def test_value_that_fails_authentication_is_named_by_its_path() -> None:
    data, filename = vector(BROKEN)
    with pytest.raises(sops.SopsError, match="spec:secretTemplates:stringData:username") as error:
        sops.decrypt(data, filename, identity_file("isindir-sops-secrets-operator/config/age-test-key/key-file.txt"))
    for plaintext in EXPECTED[BROKEN]["decryptable_values"].values():
        assert plaintext not in str(error.value)


def test_missing_mac_is_refused_unless_the_caller_ignores_it() -> None:
    data, filename = vector(NO_MAC)
    key = bytes.fromhex(EXPECTED[NO_MAC]["data_key_hex"])
    with pytest.raises(sops.SopsError, match="no MAC"):
        _formats.decrypt_with_key(data, filename, key)
    assert _formats.decrypt_with_key(data, filename, key, verify_mac=False).tree == EXPECTED[NO_MAC]["decrypted"]


@parametrize(
    ("name", "wrong"),
    [
        ("kimdre-doco-cd/internal/encryption/testdata/encrypted.yaml", "getsops-sops/age-keysource-test-constants/mockOtherIdentity.txt"),
        (f"{FLUX}/envs/env.env", "kimdre-doco-cd/internal/encryption/testdata/age-key.txt"),
        (f"{FLUX}/files/file.txt", "gibbz00-rops/identity.txt"),
    ],
)
def test_wrong_identity(name: str, wrong: str) -> None:
    data, filename = vector(name)
    with pytest.raises(sops.SopsError, match=r"no age identity matched any of the file's 1 age recipient\(s\)") as error:
        sops.decrypt(data, filename, identity_file(wrong))
    assert "AGE-SECRET-KEY" not in str(error.value).upper()


def test_no_identity_at_all() -> None:
    data, filename = vector(f"{FLUX}/envs/env.env")
    with pytest.raises(sops.SopsError, match="no age identity was given"):
        sops.decrypt(data, filename, sops.Identities())


def test_pgp_only_file_without_gpg_says_so() -> None:
    data, filename = vector("getsops-sops/example.yaml")
    with pytest.raises(sops.SopsError, match=r"2 PGP keys were not tried \(gpg is turned off\)"):
        sops.decrypt(data, filename, sops.Identities(use_gpg=False))


# --- tampering -----------------------------------------------------------------------------------

AGE_YAML = f"{FLUX}/algorithms/age.yaml"  # stringData.key encrypted; apiVersion, kind, metadata plain


def _age_yaml() -> tuple[str, sops.Identities, bytes]:
    data, _ = vector(AGE_YAML)
    return data.decode(), identities(AGE_YAML), bytes.fromhex(EXPECTED[AGE_YAML]["data_key_hex"])


def test_flipped_ciphertext_fails_authentication_naming_the_key() -> None:
    text, ids, _ = _age_yaml()
    match = search(r"(key: ENC\[AES256_GCM,data:)(.)", text)
    flipped = text[: match.start(2)] + ("A" if match.group(2) != "A" else "B") + text[match.end(2) :]
    with pytest.raises(sops.SopsError, match=r"age\.yaml: stringData:key: the value failed authentication") as error:
        sops.decrypt(flipped.encode(), "age.yaml", ids)
    assert "ENC[" not in str(error.value)


def test_changed_plain_value_under_the_mac() -> None:
    text, ids, _ = _age_yaml()
    changed = text.replace("name: age\n", "name: agf\n", 1)
    assert changed != text
    with pytest.raises(sops.SopsError, match="MAC mismatch: the file was changed after it was encrypted"):
        sops.decrypt(changed.encode(), "age.yaml", ids)
    tree: Any = sops.decrypt(changed.encode(), "age.yaml", ids, verify_mac=False).tree
    assert tree["metadata"] == {"name": "agf"}


def test_changed_stored_mac() -> None:
    text, ids, key = _age_yaml()
    stored = search(r"mac: (ENC\[[^\]]*\])", text).group(1)
    # A MAC that decrypts (encrypted with the right key and AAD) but is not the file's.
    forged = sopsenc.encrypt_value("0" * 128, key, EXPECTED[AGE_YAML]["lastmodified"])
    with pytest.raises(sops.SopsError, match="MAC mismatch: the file was changed after it was encrypted"):
        sops.decrypt(text.replace(stored, forged).encode(), "age.yaml", ids)
    # A MAC that does not decrypt at all.
    broken = stored.replace("data:", "data:A", 1)
    with pytest.raises(sops.SopsError, match="MAC mismatch: the stored MAC cannot be decrypted"):
        sops.decrypt(text.replace(stored, broken).encode(), "age.yaml", ids)
    # The lastmodified is the MAC's AAD.
    with pytest.raises(sops.SopsError, match="MAC mismatch"):
        sops.decrypt(text.replace("2024-11-12T13:33:42Z", "2024-11-12T13:33:43Z").encode(), "age.yaml", ids)


def test_plain_value_where_the_rule_wants_an_encrypted_one() -> None:
    text, ids, _ = _age_yaml()
    changed = re.sub(r"key: ENC\[[^\]]*\]", "key: oops", text)
    with pytest.raises(sops.SopsError, match="stringData:key: the value is not encrypted"):
        sops.decrypt(changed.encode(), "age.yaml", ids)


def _with_metadata(text: str, change: Callable[[Any], object]) -> bytes:
    """The file with its sops metadata changed (the MAC does not cover metadata)."""
    document: Any
    (document,) = _yaml.load_documents(text.encode())
    change(document["sops"])
    return yaml.safe_dump(document, sort_keys=False).encode()


def test_more_than_one_rule_and_key_groups() -> None:
    text, ids, _ = _age_yaml()
    with pytest.raises(sops.SopsError, match="more than one encryption rule"):
        sops.decrypt(_with_metadata(text, lambda meta: meta.update(unencrypted_suffix="_x")), "a.yaml", ids)
    one_group = _with_metadata(text, lambda meta: meta.update(key_groups=[{"age": meta.pop("age")}]))
    assert sops.decrypt(one_group, "a.yaml", ids).tree == EXPECTED[AGE_YAML]["decrypted"]
    two_groups = _with_metadata(text, lambda meta: meta.update(key_groups=[{"age": meta["age"]}, {"age": meta.pop("age")}]))
    with pytest.raises(sops.SopsError, match="Shamir key groups are not supported"):
        sops.decrypt(two_groups, "a.yaml", ids)


def test_only_ssh_recipients_say_so() -> None:
    text, ids, _ = _age_yaml()
    ssh = (MOCK / "mockEncryptedSshKey.age").read_text()
    with pytest.raises(sops.SopsError, match=r"SSH .* not supported"):
        sops.decrypt(_with_metadata(text, lambda meta: meta["age"][0].update(enc=ssh)), "a.yaml", ids)


# --- age -----------------------------------------------------------------------------------------


def test_age_layer_alone() -> None:
    data = (MOCK / "mockEncryptedKey.age").read_bytes()
    mine = sops.parse_age_identities((MOCK / "mockIdentity.txt").read_text())
    assert _age.decrypt_file(data, mine) == b"data"
    assert mine[0].recipient == "age1lzd99uklcjnc0e7d860axevet2cz99ce9pq6tzuzd05l5nr28ams36nvun"
    with pytest.raises(sops.SopsError, match="no age identity matched"):
        _age.decrypt_file(data, sops.parse_age_identities((MOCK / "mockOtherIdentity.txt").read_text()))
    assert _age.parse((MOCK / "mockEncryptedSshKey.age").read_bytes()).types == {"ssh-ed25519"}
    assert _age.decrypt(_age.parse((MOCK / "mockEncryptedSshKey.age").read_bytes()), mine) is None


def test_age_round_trip_across_chunks() -> None:
    identity = _age.AgeIdentity(os.urandom(32))
    for size in (0, 1, 65536, 65537, 200_000):
        plaintext = os.urandom(size)
        armored = sopsenc.age_encrypt(plaintext, [os.urandom(32), identity.public_key])
        assert _age.decrypt_file(armored.encode(), [identity]) == plaintext


def test_age_header_mac_is_checked() -> None:
    identity = _age.AgeIdentity(os.urandom(32))
    binary = _age.dearmor(sopsenc.age_encrypt(b"k" * 32, [identity.public_key]).encode())
    tampered = binary.replace(b"age-encryption.org/v1\n", b"age-encryption.org/v1\n-> grease x\n\n", 1)
    with pytest.raises(sops.SopsError, match="header MAC"):
        _age.decrypt_file(tampered, [identity])


def test_identity_file_parsing() -> None:
    text = (VECTORS / "kimdre-doco-cd/internal/encryption/testdata/age-key.txt").read_text()
    (identity,) = sops.parse_age_identities(text)
    secret = text.splitlines()[-1]
    assert identity.recipient == search(r"public key: (age1\w+)", text).group(1)
    assert secret[16:] not in repr(identity).upper() and identity.recipient in repr(identity)
    assert sops.parse_age_identities((VECTORS / f"{FLUX}/keys/age-pq.txt").read_text()) == []
    for bad, number in ((f"# c\n\n{secret[:-1]}X\n", 3), (f"{secret}\nhello world\n", 2)):
        with pytest.raises(sops.SopsError, match=f"^line {number}: ") as error:
            sops.parse_age_identities(bad)
        assert "hello" not in str(error.value) and secret[16:] not in str(error.value)
    assert sops.parse_age_identities(secret.lower()) == [identity]


# --- detection -----------------------------------------------------------------------------------


@parametrize("name", sorted(EXPECTED))
def test_detect_format_of_every_vector(name: str) -> None:
    data, filename = vector(name)
    assert sops.looks_encrypted(data)
    assert sops.detect_format(data, filename) == EXPECTED[name]["format"].split(" ")[0]


COMPOSE = b"services:\n  web:\n    image: nginx\n    environment:\n      sops_mac: x\n"
PLAIN = [
    (VECTORS / "kimdre-doco-cd/internal/encryption/testdata/unencrypted.yaml").read_bytes(),
    (VECTORS / "kimdre-doco-cd/internal/encryption/testdata/unencrypted.json").read_bytes(),
    (VECTORS / "kimdre-doco-cd/internal/encryption/testdata/unencrypted.env").read_bytes(),
    (VECTORS / "isindir-sops-secrets-operator/config/age-test-key/00-raw-test-secrets.yaml").read_bytes(),
    b"[section]\nkey = value\n",
    b'{"sops": "not an object", "data": "x"}',
    b"{not json",
    COMPOSE,
    b"DB_PASSWORD=secret\nSOPS_MAC=x\n",
    b"",
    bytes(range(256)) * 2,  # binary garbage (fixed: xdist workers must collect the same ids)
    b"\xff\xfe\x00garbage ENC[AES256_GCM, sops",
]


@parametrize("data", PLAIN)
def test_detect_format_of_plain_files(data: bytes) -> None:
    assert sops.detect_format(data, "file.yaml") is None
    assert sops.detect_format(data, "file.json") is None


def test_detect_binary_or_json_by_name() -> None:
    data, _ = vector(f"{FLUX}/files/file.txt")
    assert sops.detect_format(data, "file.txt") == "binary"
    assert sops.detect_format(data, "file.JSON") == "json"


def test_plain_file_is_not_decrypted() -> None:
    with pytest.raises(sops.SopsError, match=r"^compose\.yaml: not a SOPS file"):
        sops.decrypt(COMPOSE, "compose.yaml", sops.Identities())


# --- variables() and content() -------------------------------------------------------------------


def _with_key(name: str) -> sops.Decrypted:
    data, filename = vector(name)
    return _formats.decrypt_with_key(data, filename, bytes.fromhex(EXPECTED[name]["data_key_hex"]))


def test_dotenv_variables_and_content() -> None:
    name = f"{FLUX}/envs/env.env"
    result = sops.decrypt(*vector(name), identities(name))
    assert result.variables() == {"key": "value"}
    assert result.content() == b"key=value\n"
    assert result.secrets == ("value",)
    assert "value" not in repr(result).replace("Decrypted", "")
    nix = _with_key("Mic92-sops-nix/pkgs/sops-install-secrets/test-assets/secrets.env")
    assert nix.variables()["example_multiline"] == "foo\nbar\nbaz"
    assert b"example_multiline=foo\\nbar\\nbaz\n" in nix.content()
    assert _with_key("getsops-sops/functional-tests/res/format.enc.env").content() == b"foo = bar\n"  # as sops's own test


def test_yaml_variables_and_content() -> None:
    name = "kimdre-doco-cd/internal/encryption/testdata/encrypted.yaml"
    result = sops.decrypt(*vector(name), identities(name))
    assert result.variables() == {"this.is.encrypted": "yes"}
    assert result.content() == b"this.is.encrypted: 'yes'\n"
    assert _with_key("getsops-sops/functional-tests/res/format.enc.yaml").content() == b"foo: bar\n"  # as sops's own test
    rops = sops.decrypt(*vector(name := "gibbz00-rops/crates/lib/tests/sops_references/age_example.yaml"), identities(name))
    with pytest.raises(sops.SopsError, match=r"^example_array: a nested value"):
        rops.variables()
    assert _yaml.load_documents(rops.content()) == [EXPECTED[name]["decrypted"]]
    example = _with_key("getsops-sops/example.yaml")
    assert _yaml.load_documents(example.content()) == [without_comments(EXPECTED["getsops-sops/example.yaml"]["decrypted"])]
    assert b"key: |\n" in example.content()


def test_json_variables_and_content() -> None:
    name = "kimdre-doco-cd/internal/encryption/testdata/encrypted.json"
    result = sops.decrypt(*vector(name), identities(name))
    assert result.variables() == {"this": "is encrypted"}
    assert result.content() == b'{\n\t"this": "is encrypted"\n}\n'
    assert _with_key("getsops-sops/functional-tests/res/format.enc.json").content() == b'{\n\t"foo": "bar"\n}\n'  # as sops's own test
    example = _with_key("getsops-sops/example.json")
    with pytest.raises(sops.SopsError, match=r"^address: a nested value"):
        example.variables()
    assert json.loads(example.content()) == EXPECTED["getsops-sops/example.json"]["decrypted"]


def test_binary_content() -> None:
    name = f"{FLUX}/files/file.txt"
    result = sops.decrypt(*vector(name), identities(name))
    assert result.content() == result.tree == b"value"
    with pytest.raises(sops.SopsError, match="binary file cannot be used as variables"):
        result.variables()
    nested = sops.decrypt(*vector(NESTED), identities(NESTED))
    assert nested.content() == b"value"


def test_ini_content() -> None:
    assert _with_key("getsops-sops/functional-tests/res/format.enc.ini").content() == b"[foo]\nbar = baz\n"  # as sops's own test
    assert _with_key("getsops-sops/functional-tests/res/format-2.enc.ini").content() == b"[foo]\nbar = baz\n"
    example = _with_key("getsops-sops/example.ini")
    assert b"[not private]\nnotsecret_unencrypted = hi there!\n" in example.content()
    with pytest.raises(sops.SopsError, match="ini file cannot be used as variables"):
        example.variables()


# --- files no vector covers (the bench's test-only encryptor) -------------------------------------


ME = _age.AgeIdentity(bytes(range(32)))


def _decrypt(data: bytes, filename: str, identity: _age.AgeIdentity) -> sops.Decrypted:
    return sops.decrypt(data, filename, sops.Identities(age=(identity,), use_gpg=False))


def test_ini_with_age() -> None:
    tree = {"db": {"user": "admin", "password": "p;a#ss", "note_unencrypted": "plain"}, "other": {"x": "1"}}
    data = sopsenc.encrypt_file("ini", tree, [ME.public_key])
    assert sops.detect_format(data, "s.ini") == "ini"
    result = _decrypt(data, "s.ini", ME)
    assert result.tree == {"DEFAULT": {}, **tree}
    assert set(result.secrets) == {"admin", "p;a#ss", "1"}
    assert result.content().startswith(b"[db]\nuser = admin\npassword = `p;a#ss`\nnote_unencrypted = plain\n")


def test_types_in_yaml_and_json() -> None:
    moment = _golang.GoTime(2024, 1, 2, 3, 4, 5, 123456789, 3600)
    tree = {"s": "text", "i": -42, "f": 1234568000.0, "t": True, "n": None, "e": "", "b": b"\x00\xffraw", "when": moment}
    result = _decrypt(sopsenc.encrypt_file("yaml", tree, [ME.public_key]), "t.yaml", ME)
    assert result.tree == {**tree, "when": moment.to_datetime()}
    with pytest.raises(sops.SopsError, match="not UTF-8"):
        result.variables()
    flat = sops.Decrypted("yaml", {k: v for k, v in result.tree.items() if k != "b"}, ())
    expected = {"s": "text", "i": "-42", "f": "1.234568E+09", "t": "true", "n": "", "e": "", "when": "2024-01-02T03:04:05+01:00"}
    assert flat.variables() == expected
    json_tree = {k: v for k, v in tree.items() if k not in ("b", "when")} | {"l": [1.5, "x", {"k": 2}]}
    result = _decrypt(sopsenc.encrypt_file("json", json_tree, [ME.public_key]), "t.json", ME)
    assert result.tree == json_tree
    assert set(result.secrets) >= {"text", "-42", "1.234568E+09", "true", "1.5", "x", "2"}
    assert json.loads(result.content()) == json_tree


def test_plain_yaml_leaves_are_typed_like_yaml_v3() -> None:
    """A plain `yes` enters the MAC as "yes", `0x1F` as 31, a timestamp as Go's RFC 3339."""
    key = os.urandom(32)
    encrypted = sopsenc.encrypt_file("yaml", {"secret": "s"}, [ME.public_key], key=key).decode()
    digest = hashlib.sha512(b"yes" + b"31" + b"2024-01-01T00:00:00Z" + b"s").hexdigest().upper()
    stored = search(r"mac: (ENC\[[^\]]*\])", encrypted).group(1)
    text = "on_unencrypted: yes\nhex_unencrypted: 0x1F\ndate_unencrypted: 2024-01-01\n"
    text += encrypted.replace(stored, sopsenc.encrypt_value(digest, key, sopsenc.LASTMODIFIED))
    result = _decrypt(text.encode(), "t.yaml", ME)
    midnight = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    assert result.tree == {"on_unencrypted": "yes", "hex_unencrypted": 31, "date_unencrypted": midnight, "secret": "s"}


def test_mac_only_encrypted() -> None:
    tree = {"a": "secret", "b_unencrypted": "changeable"}
    data = sopsenc.encrypt_file("yaml", tree, [ME.public_key], mac_only=True).decode()
    assert _decrypt(data.replace("changeable", "changed").encode(), "m.yaml", ME).tree == {"a": "secret", "b_unencrypted": "changed"}
    normal = sopsenc.encrypt_file("yaml", tree, [ME.public_key]).decode()
    with pytest.raises(sops.SopsError, match="MAC mismatch"):
        _decrypt(normal.replace("changeable", "changed").encode(), "m.yaml", ME)


def test_several_yaml_documents() -> None:
    key = os.urandom(32)
    first = sopsenc.encrypt_file("yaml", {"a": "1"}, [ME.public_key], key=key).decode()
    second = "b: " + sopsenc.encrypt_value("2", key, "b:") + "\n"
    digest = hashlib.sha512(b"12").hexdigest().upper()
    stored = search(r"mac: (ENC\[[^\]]*\])", first).group(1)
    text = first.replace(stored, sopsenc.encrypt_value(digest, key, sopsenc.LASTMODIFIED)) + "---\n" + second
    result = _decrypt(text.encode(), "docs.yaml", ME)
    assert result.tree == [{"a": "1"}, {"b": "2"}]
    assert result.content() == b"a: '1'\n---\nb: '2'\n"
    with pytest.raises(sops.SopsError, match="several documents"):
        result.variables()


def test_dotenv_comment_rules() -> None:
    """encrypted_comment_regex: only values after a matching comment are encrypted."""
    key = os.urandom(32)
    secret = sopsenc.encrypt_value("hidden", key, "TOKEN:")
    digest = hashlib.sha512(b"hidden" + b"open").hexdigest().upper()
    lines = [
        "# sops:enc", f"TOKEN={secret}", "OTHER=open",
        f"sops_age__list_0__map_enc={sopsenc.age_encrypt(key, [ME.public_key]).replace(chr(10), chr(92) + 'n')}",
        f"sops_lastmodified={sopsenc.LASTMODIFIED}", f"sops_mac={sopsenc.encrypt_value(digest, key, sopsenc.LASTMODIFIED)}",
        "sops_encrypted_comment_regex=sops:enc", "sops_version=3.9.0",
    ]
    result = _decrypt("\n".join(lines).encode(), "c.env", ME)
    assert result.tree == {"TOKEN": "hidden", "OTHER": "open"}
    assert result.secrets == ("hidden",)


def test_old_json_numbers_are_accepted() -> None:
    """sops before 3.13.2 read every JSON number as a float: a big plain integer entered the
    MAC as Go's float digits."""
    key = os.urandom(32)
    base = json.loads(sopsenc.encrypt_file("json", {"a": "x"}, [ME.public_key], key=key))
    big = 2**60 + 1
    digest = hashlib.sha512(_golang.format_float_f(float(big)).encode() + b"x").hexdigest().upper()
    base["sops"]["mac"] = sopsenc.encrypt_value(digest, key, sopsenc.LASTMODIFIED)
    text = json.dumps(base).replace('"a":', f'"big_unencrypted": {big}, "a":', 1)
    assert _decrypt(text.encode(), "old.json", ME).tree == {"big_unencrypted": big, "a": "x"}


# --- the readers, in detail ----------------------------------------------------------------------


@parametrize(
    ("text", "value"),
    [
        ("yes", "yes"), ("no", "no"), ("on", "on"), ("Off", "Off"), ("y", "y"), ("true", True), ("FALSE", False),
        ("~", None), ("", None), ("null", None), ("12", 12), ("-0", 0), ("+5", 5), ("1_000", 1000), ("0x1F", 31),
        ("0o17", 15), ("0777", 511), ("0b101", 5), ("09", 9.0), ("1.5", 1.5), ("1e3", 1000.0), (".5", 0.5), ("1.", 1.0),
        ("18446744073709551615", 2**64 - 1), ("18446744073709551616", float(2**64)), ("1e400", "1e400"), ("<<", "<<"),
        ("2024-01-01", _golang.GoTime(2024, 1, 1, 0, 0, 0, 0, 0)), ("2024-13-01", "2024-13-01"), ("12:30", "12:30"),
    ],
)
def test_yaml_plain_scalars_resolve_like_yaml_v3(text: str, value: object) -> None:
    resolved = _yaml.resolve_plain(text)
    assert resolved == value and type(resolved) is type(value)


@parametrize(
    ("document", "problem"),
    [(b"1: a\n", "not a string"), (b"a: 1\na: 2\n", "already defined"), (b"a: &x [*x]\n", "recursive"), (b"a: !!int x\n", "!!int"),
     (b"- a\n", "not a mapping"), (b"a: [\n", "line 2, column 1")],
)
def test_yaml_that_sops_refuses(document: bytes, problem: str) -> None:
    with pytest.raises(sops.SopsError, match=re.escape(problem)):
        _formats._parse_yaml(document)


def test_yaml_tags_and_merge_keys() -> None:
    (document,) = _yaml.load_documents(b"a: !!str 12\nb: !!float 3\nc: !custom x\nd: &m {k: v}\ne:\n  <<: *m\nf: '12'\ng: |\n  x\n")
    assert document == {"a": "12", "b": 3.0, "c": "x", "d": {"k": "v"}, "e": {"<<": {"k": "v"}}, "f": "12", "g": "x\n"}


def test_ini_reader_follows_go_ini() -> None:
    text = (
        "top = level\n; about s\n[s]\nplain = a b ; inline\nquoted = \"q\"\nsingle = 'x'\nback = `a;b`\n"
        'multi = """one\ntwo"""\ncont = a\\\n  b\ncolon: c\n- = auto\n\n[s]\nagain = yes\n'
    )
    sections = _formats.ini_sections(text)
    assert [name for name, _ in sections] == ["DEFAULT", "s", "s"]
    assert sections[0][1] == [("top", "level")]
    assert sections[1][1] == [
        (_formats.Comment("about s"), None), ("plain", "a b"), (_formats.Comment("inline"), None), ("quoted", "q"), ("single", "x"),
        ("back", "a;b"), ("multi", "one\ntwo"), ("cont", "ab"), ("colon", "c"), ("#1", "auto"),
    ]
    with pytest.raises(sops.SopsError, match="line 1 is not key = value"):
        _formats.ini_sections("no delimiter\n")


def test_unflatten() -> None:
    items = [("age__list_1__map_enc", "b"), ("age__list_0__map_enc", "a"), ("lastmodified", "t"), ("mac_only_encrypted", "true")]
    assert _formats.unflatten(items) == {"age": [{"enc": "a"}, {"enc": "b"}], "lastmodified": "t", "mac_only_encrypted": "true"}
    with pytest.raises(sops.SopsError, match="incomplete list"):
        _formats.unflatten([("age__list_1__map_enc", "b")])


@parametrize(
    ("value", "f", "g", "json_text"),
    [
        (1234568000.0, "1234568000", "1.234568E+09", "1234568000"), (25.4, "25.4", "25.4", "25.4"), (1.0, "1", "1.0", "1"),
        (100000.0, "100000", "100000.0", "100000"), (1e6, "1000000", "1E+06", "1000000"), (0.0001, "0.0001", "0.0001", "0.0001"),
        (1e-7, "0.0000001", "1E-07", "1e-7"), (1e21, "1" + "0" * 21, "1E+21", "1e+21"), (-0.0, "-0", "-0.0", "-0"),
        (1234.56789, "1234.56789", "1234.56789", "1234.56789"),
    ],
)
def test_go_float_formatting(value: float, f: str, g: str, json_text: str) -> None:
    assert (_golang.format_float_f(value), _golang.format_float_g(value), _golang.format_float_json(value)) == (f, g, json_text)


def test_go_scalar_parsing() -> None:
    assert _golang.parse_int("+92") == 92
    assert _golang.parse_bool("True") is True and _golang.parse_bool("F") is False
    assert _golang.parse_float("1234568000") == 1234568000.0 and _golang.parse_float("-Inf") == float("-inf")
    for parse, text in ((_golang.parse_int, "1_0"), (_golang.parse_int, " 1"), (_golang.parse_bool, "yes"), (_golang.parse_float, "1e400")):
        with pytest.raises(ValueError):
            parse(text)
    moment = _golang.parse_rfc3339("2006-01-02T15:04:05.120+07:00")
    assert moment.rfc3339nano() == "2006-01-02T15:04:05.12+07:00" and moment.rfc3339() == "2006-01-02T15:04:05+07:00"
    assert moment.to_datetime() == datetime.datetime(2006, 1, 2, 8, 4, 5, 120000, datetime.UTC)
