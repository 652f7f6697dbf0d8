"""Who signed what is about to be deployed: git's own verification against keys the host trusts.

Two kinds of keys can be trusted, each from a file the operator keeps in /etc/composeflux:

- SSH keys, in git's gpg.ssh.allowedSignersFile format (`allowed_signers`): git runs
  `ssh-keygen -Y find-principals` and `-Y verify` with it;
- OpenPGP public keys (`trusted-keys.gpg`, binary or armored): they are imported into a private
  GnuPG home made for the one call (mode 0700 under $TMPDIR, removed afterwards), every one of
  them with ultimate ownertrust, so a good signature by any key of the keyring counts and nothing
  else does. The user's ~/.gnupg is never read: a key the host's gpg knows but the keyring does
  not hold is an unknown key. The home's gpg.conf switches off everything that could fetch or
  import a key behind our back (key servers, keys embedded in signatures) and starting an agent.

`verify_commit` checks the signature of one commit (`git verify-commit --raw`); `newest_verified_tag`
picks the newest tag matching a pattern whose own signature (an annotated, signed tag; a lightweight
tag never counts) verifies (`git verify-tag --raw`). Both verify an object id, resolved once, and
return that id: what was verified is exactly what may be deployed, whatever the ref does meanwhile.

git and gpg run bounded (a timeout each, in a process group of their own that is killed as a whole),
without a terminal, with LC_ALL=C (their output is parsed), and with no user or system git
configuration: HOME is an empty directory, GIT_CONFIG_GLOBAL is /dev/null, GIT_CONFIG_NOSYSTEM=1,
and the programs and files git uses for verification are given with -c on the command line, which
wins over any other configuration (the clone's own, GIT_CONFIG_COUNT from composeflux's environment).
Replace refs are ignored (GIT_NO_REPLACE_OBJECTS): the real objects are verified.

Every refusal is a SignatureError whose `reason` is one of REASONS and whose message names the
commit (12 hex digits) or tag and why. When git or gpg cannot be run at all, times out, or the
revision is not there, the error is a CannotVerify (a SignatureError with reason "cannot verify"):
no verdict on any signature, and never a reason to fall back to an older tag.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from composeflux.processes import run_bounded

log = logging.getLogger(__name__)

DEFAULT_ALLOWED_SIGNERS = Path("/etc/composeflux/allowed_signers")
DEFAULT_KEYRING = Path("/etc/composeflux/trusted-keys.gpg")
# Seconds for each git or gpg process: all of them work on local files only.
TIMEOUT = 60.0
# newest_verified_tag tries at most this many of the newest matching tags: a remote full of
# unsigned tags costs a bounded number of processes, not one per tag ever pushed.
MAX_TAGS = 200
# How many of the newest candidates' reasons the "no valid tag" message lists.
REPORTED_TAGS = 5

UNSIGNED = "unsigned"
UNKNOWN_KEY = "unknown key"
BAD_SIGNATURE = "bad signature"
EXPIRED_KEY = "expired key"
REVOKED_KEY = "revoked key"
NO_VALID_TAG = "no valid tag"
NO_KEYS = "no keys configured"
CANNOT_VERIFY = "cannot verify"
REASONS = (UNSIGNED, UNKNOWN_KEY, BAD_SIGNATURE, EXPIRED_KEY, REVOKED_KEY, NO_VALID_TAG, NO_KEYS, CANNOT_VERIFY)

# Where git finds a signature in a tag's body (the last line that starts with one of these:
# git's parse_signed_buffer), and which kind of signature each starts.
SIGNATURE_STARTS = {
    b"-----BEGIN PGP SIGNATURE-----": "openpgp",
    b"-----BEGIN PGP MESSAGE-----": "openpgp",
    b"-----BEGIN SSH SIGNATURE-----": "ssh",
    b"-----BEGIN SIGNED MESSAGE-----": "x509",
}
# Variables that would make git look at another repository, index or object store than `repo`.
REPOSITORY_VARIABLES = frozenset(
    {
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_COMMON_DIR",
        "GIT_NAMESPACE",
        "GIT_REPLACE_REF_BASE",
        "GIT_CONFIG",
        "GIT_CONFIG_SYSTEM",
        "GNUPGHOME",
        "GPG_TTY",
        "GPG_AGENT_INFO",
    }
)
# The private GnuPG home's configuration: no key comes from anywhere but the keyring, and no
# daemon is started (nothing outlives the call or writes into the directory being removed).
GPG_CONF = """\
no-greeting
no-autostart
no-auto-key-retrieve
no-auto-key-import
auto-key-locate local
keyserver-options no-auto-key-retrieve
trust-model pgp
"""


class SignatureError(Exception):
    """What composeflux was about to deploy is not signed by a trusted key; nothing of it may be
    deployed. `reason` is one of REASONS; the message names the commit or tag and why."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class CannotVerify(SignatureError):
    """git or gpg could not be run, did not finish in time, or the revision or the trusted-key
    files are not there: no verdict on the signature (reason "cannot verify")."""

    def __init__(self, message: str):
        super().__init__(CANNOT_VERIFY, message)


@dataclasses.dataclass(frozen=True)
class Trust:
    """The keys whose signatures count: SSH keys of an allowed-signers file, OpenPGP keys of a
    keyring file. None: no key of that kind is trusted."""

    allowed_signers: Path | None
    keyring: Path | None

    @property
    def empty(self) -> bool:
        return self.allowed_signers is None and self.keyring is None


@dataclasses.dataclass(frozen=True)
class Verified:
    """A good signature by a trusted key: `commit` (the full id) may be deployed."""

    commit: str
    signer: str  # "ssh ED25519 SHA256:... (principal)" or "openpgp FINGERPRINT (user id)"
    ref: str  # what was verified: the revision given, or "refs/tags/<name>"
    kind: str  # "commit" or "tag"


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What git's verification output says: `signer` for a good signature by a trusted key, or
    the `reason` (one of REASONS) and `detail` (a phrase for the message) why not."""

    signer: str | None = None
    reason: str = ""
    detail: str = ""


def default_trust(settings: Mapping[str, str]) -> Trust:
    """The trust from ALLOWED_SIGNERS and VERIFY_KEYRING. Unset or empty: the default file when it
    exists, else None. Set: an absolute path to a regular file, or ValueError saying what is wrong."""
    return Trust(
        allowed_signers=_trusted_file(settings, "ALLOWED_SIGNERS", DEFAULT_ALLOWED_SIGNERS),
        keyring=_trusted_file(settings, "VERIFY_KEYRING", DEFAULT_KEYRING),
    )


def _trusted_file(settings: Mapping[str, str], key: str, default: Path) -> Path | None:
    raw = settings.get(key, "").strip()
    if not raw:
        return default if default.is_file() else None
    path = Path(raw)
    if not path.is_absolute():
        raise ValueError(f"{key} must be an absolute path, not {raw!r}")
    if not path.exists():
        raise ValueError(f"{key} {path} does not exist")
    if not path.is_file():
        raise ValueError(f"{key} {path} is not a regular file")
    return path


def describe_trust(trust: Trust) -> str:
    """The trusted keys in a phrase for a log line."""
    parts = []
    if trust.allowed_signers is not None:
        parts.append(f"SSH keys of {trust.allowed_signers}")
    if trust.keyring is not None:
        parts.append(f"OpenPGP keys of {trust.keyring}")
    return " and ".join(parts) if parts else "no keys"


def verify_commit(repo: Path, revision: str, trust: Trust, env: Mapping[str, str] | None = None) -> Verified:
    """The commit `revision` names in `repo`, when its own signature is a good one by a trusted
    key. SignatureError (reason: unsigned, unknown key, bad signature, expired key, revoked key,
    no keys configured) when not; CannotVerify when git or gpg cannot tell."""
    if trust.empty:
        raise SignatureError(NO_KEYS, f"cannot verify {revision}: no keys configured (neither an allowed signers file nor a keyring)")
    with _Session(repo, trust, env) as session:
        commit = session.resolve(revision, "commit")
        what = f"commit {commit[:12]}" + ("" if commit.startswith(revision) else f" ({revision})")
        body = session.read_object(commit, "commit")
        verdict = session.verify("verify-commit", commit, _commit_signature_kind(body, len(commit)))
        if verdict.signer is None:
            raise SignatureError(verdict.reason, f"{what}: {verdict.detail}")
        return Verified(commit=commit, signer=verdict.signer, ref=revision, kind="commit")


def newest_verified_tag(repo: Path, pattern: str, trust: Trust, env: Mapping[str, str] | None = None) -> Verified:
    """The newest tag matching refs/tags/<pattern> (a glob, as `git for-each-ref` matches it;
    newest by the tag's creator date, then by version) whose own signature is a good one by a
    trusted key, with the commit it points at. Each newer tag that does not verify is logged
    (WARNING) with why. SignatureError "no valid tag" naming the pattern and the newest
    candidates' reasons when none verifies among the newest MAX_TAGS; "no keys configured";
    CannotVerify when git or gpg cannot tell (never a reason to take an older tag)."""
    if not pattern or pattern.startswith(("/", "refs/", "-")):
        raise ValueError(f"tag pattern {pattern!r} must be a glob relative to refs/tags/, such as v*")
    if trust.empty:
        raise SignatureError(NO_KEYS, f"cannot verify tags {pattern}: no keys configured (neither an allowed signers file nor a keyring)")
    with _Session(repo, trust, env) as session:
        candidates = session.tags(pattern)
        if not candidates:
            raise SignatureError(NO_VALID_TAG, f"no tag matches refs/tags/{pattern}")
        rejected: list[str] = []
        for object_id, object_type, refname in candidates[:MAX_TAGS]:
            name = refname.removeprefix("refs/tags/")
            try:
                commit, signer = session.verify_tag(object_id, object_type, refname)
            except SignatureError as error:
                if isinstance(error, CannotVerify):
                    raise
                log.warning("Skipping tag %s (%s): %s", name, object_id[:12], error)
                rejected.append(f"{name}: {error}")
                continue
            return Verified(commit=commit, signer=signer, ref=refname, kind="tag")
        shown = "; ".join(rejected[:REPORTED_TAGS])
        more = len(candidates) - REPORTED_TAGS
        if more > 0:
            shown += f"; and {more} older" + (f" (only the newest {MAX_TAGS} were tried)" if len(candidates) > MAX_TAGS else "")
        raise SignatureError(NO_VALID_TAG, f"no tag matching refs/tags/{pattern} has a valid signature: {shown}")


def _commit_signature_kind(body: bytes, id_length: int) -> str | None:
    """The kind of the signature in a commit's headers (gpgsig in a SHA-1 repository, gpgsig-sha256
    in a SHA-256 one: the header git verifies), or None when there is none."""
    header = b"gpgsig " if id_length == 40 else b"gpgsig-sha256 "
    for line in body.partition(b"\n\n")[0].split(b"\n"):
        if line.startswith(header):
            return SIGNATURE_STARTS.get(line[len(header) :].strip(), "unknown")
    return None


def _tag_signature_kind(body: bytes) -> str | None:
    """The kind of the signature at the end of a tag's message (the last line that starts one,
    as git finds it), or None when there is none."""
    kind = None
    for line in body.partition(b"\n\n")[2].split(b"\n"):
        for start, name in SIGNATURE_STARTS.items():
            if line.startswith(start):
                kind = name
    return kind


def _tag_name(body: bytes) -> str:
    """The name a tag object was made under (its "tag" header)."""
    for line in body.partition(b"\n\n")[0].split(b"\n"):
        if line.startswith(b"tag "):
            return line[4:].decode("utf-8", "replace")
    return ""


# -- reading git's output -------------------------------------------------------------------------

SSH_GOOD = re.compile(r'^Good "git" signature for (?P<principal>.+) with (?P<algorithm>\S+) key (?P<fingerprint>\S+)\s*$', re.M)
SSH_UNKNOWN = re.compile(r'^Good "git" signature with (?P<algorithm>\S+) key (?P<fingerprint>\S+)\s*$', re.M)
GPG_TRUSTED = ("TRUST_FULLY", "TRUST_ULTIMATE")


SIGNER_TIME = re.compile(r'(?:^|,)(valid-after|valid-before)="?([0-9]{8}(?:[0-9]{4}(?:[0-9]{2})?)?)(Z?)"?', re.IGNORECASE)


def signer_valid_at(line: str, moment: datetime.datetime) -> bool:
    """Whether an allowed_signers line may sign at `moment` (comments and blank lines are kept:
    True). Its options field may hold valid-after= and valid-before= times (YYYYMMDD[HHMM[SS]],
    UTC with a Z, else local time), as ssh-keygen(1) describes them."""
    fields = line.split()
    if len(fields) < 3 or line.lstrip().startswith("#"):
        return True
    options = fields[1] if not fields[1].startswith(("ssh-", "ecdsa-", "sk-")) else ""
    for name, digits, utc in SIGNER_TIME.findall(options):
        layout = {8: "%Y%m%d", 12: "%Y%m%d%H%M", 14: "%Y%m%d%H%M%S"}[len(digits)]
        when = datetime.datetime.strptime(digits, layout)
        when = when.replace(tzinfo=datetime.UTC) if utc else when.astimezone()
        if (name.lower() == "valid-before" and moment >= when) or (name.lower() == "valid-after" and moment < when):
            return False
    return True


def read_ssh_output(output: str, succeeded: bool, allowed_signers: Path | None) -> Verdict:
    """The verdict on what `git verify-* --raw` printed for an SSH signature (git's lines and
    ssh-keygen's). Good only when git succeeded and named the principal the key is allowed for.

    git first asks `ssh-keygen -Y find-principals` which principal of the allowed signers may use
    the key; when none may, it still checks the signature without a principal and prints
    'Good "git" signature with ... key' followed by "No principal matched." (an unknown key,
    not a good signature). An expired entry (valid-before) adds "key has expired", a
    namespaces= restriction "is not permitted for use in signature namespace"; a signature over
    other content than the object's, "Signature verification failed: incorrect signature"."""
    good = SSH_GOOD.search(output)
    if succeeded and good:
        return Verdict(signer=f"ssh {good['algorithm']} {good['fingerprint']} ({good['principal']})")
    unknown = SSH_UNKNOWN.search(output)
    key = f"SSH key {unknown['fingerprint']}" if unknown else "the SSH key"
    where = str(allowed_signers) if allowed_signers is not None else "the allowed signers (none are configured)"
    if "no signature found" in output:
        return Verdict(reason=UNSIGNED, detail="not signed")
    if "incorrect signature" in output or "namespace does not match" in output or "Signature verification failed" in output:
        return Verdict(reason=BAD_SIGNATURE, detail=f"bad SSH signature ({_ssh_detail(output)})")
    if "key has expired" in output:
        return Verdict(reason=EXPIRED_KEY, detail=f"signed by {key}, whose entry in {where} has expired ({_ssh_detail(output)})")
    if "key is not yet valid" in output:
        return Verdict(reason=UNKNOWN_KEY, detail=f"signed by {key}, whose entry in {where} is not valid yet ({_ssh_detail(output)})")
    if "not permitted for use in signature namespace" in output:
        return Verdict(reason=UNKNOWN_KEY, detail=f"signed by {key}, which {where} does not allow to sign for git")
    if "No principal matched" in output or unknown:
        return Verdict(reason=UNKNOWN_KEY, detail=f"signed by {key}, which is not in {where}")
    return Verdict(reason=BAD_SIGNATURE, detail=f"the SSH signature does not verify ({_ssh_detail(output) or 'git gave no reason'})")


def _ssh_detail(output: str) -> str:
    """ssh-keygen's diagnostics, without git's summary lines."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(('Good "git" signature', "Could not verify signature", "No principal matched"))]
    text = "; ".join(useful or lines)
    return text if len(text) <= 300 else text[:297] + "..."


def read_gpg_status(output: str, succeeded: bool, trusted: Collection[str], keyring: Path | None) -> Verdict:
    """The verdict on gpg's status lines as `git verify-* --raw` prints them. Good only when git
    succeeded, gpg said GOODSIG and VALIDSIG, the primary key (VALIDSIG's last field) is one of
    the `trusted` fingerprints and gpg counts it as valid (TRUST_FULLY or TRUST_ULTIMATE).

    BADSIG: bad signature (the content changed after signing, or the signature is damaged);
    REVKEYSIG: revoked key; EXPKEYSIG: expired key (expired now, even if the signature was made
    before); EXPSIG: the signature itself has expired (reported as an expired key); ERRSIG with
    NO_PUBKEY: unknown key; ERRSIG alone: gpg cannot check it (an unsupported algorithm), a bad
    signature; nothing at all: git found no signature (unsigned) or said why (bad signature)."""
    status: dict[str, list[str]] = {}
    for line in output.splitlines():
        if line.startswith("[GNUPG:] "):
            keyword, _, rest = line[len("[GNUPG:] ") :].partition(" ")
            status.setdefault(keyword, rest.split(" ") if rest else [])
    where = str(keyring) if keyring is not None else "the keyring (none is configured)"

    def key(keyword: str) -> str:
        """The key a status line names: by its fingerprint when VALIDSIG gives it, with the user id."""
        fields = status[keyword]
        valid = status.get("VALIDSIG", [])
        name = valid[9] if len(valid) > 9 else fields[0] if fields else "?"
        user = " ".join(fields[1:])
        return f"OpenPGP key {name}" + (f" ({user})" if user else "")

    if "BADSIG" in status:
        return Verdict(
            reason=BAD_SIGNATURE, detail=f"bad signature by {key('BADSIG')}: the content changed after signing, or it is damaged"
        )
    if "REVKEYSIG" in status:
        return Verdict(reason=REVOKED_KEY, detail=f"signed by {key('REVKEYSIG')}, which has been revoked")
    if "EXPKEYSIG" in status:
        return Verdict(reason=EXPIRED_KEY, detail=f"signed by {key('EXPKEYSIG')}, which has expired")
    if "EXPSIG" in status:
        return Verdict(reason=EXPIRED_KEY, detail=f"the signature by {key('EXPSIG')} has expired")
    if "ERRSIG" in status:
        fields = status["ERRSIG"]
        long_id = fields[0] if fields else "?"
        fingerprint = fields[6] if len(fields) > 6 and fields[6] not in ("", "-") else long_id
        if "NO_PUBKEY" in status:
            return Verdict(reason=UNKNOWN_KEY, detail=f"signed by OpenPGP key {fingerprint}, which is not in {where}")
        code = fields[5] if len(fields) > 5 else "?"
        return Verdict(reason=BAD_SIGNATURE, detail=f"gpg cannot check the signature by OpenPGP key {fingerprint} (ERRSIG code {code})")
    if "GOODSIG" in status and "VALIDSIG" in status:
        valid = status["VALIDSIG"]
        signing = valid[0] if valid else ""
        primary = valid[9] if len(valid) > 9 else signing
        user = " ".join(status["GOODSIG"][1:])
        signer = f"openpgp {primary} ({user})" + (f" with subkey {signing}" if signing and signing != primary else "")
        if primary.upper() not in {fingerprint.upper() for fingerprint in trusted}:
            return Verdict(reason=UNKNOWN_KEY, detail=f"signed by OpenPGP key {primary}, which is not in {where}")
        levels = [keyword for keyword in status if keyword.startswith("TRUST_")]
        if not any(level in GPG_TRUSTED for level in levels):
            return Verdict(
                reason=UNKNOWN_KEY, detail=f"gpg does not count key {primary} as valid ({', '.join(levels) or 'no TRUST_ line'})"
            )
        if not succeeded:
            return Verdict(reason=BAD_SIGNATURE, detail=f"git rejected the signature by {primary}: {_first_line(output)}")
        return Verdict(signer=signer)
    if "no signature found" in output or not output.strip():
        return Verdict(reason=UNSIGNED, detail="not signed")
    return Verdict(reason=BAD_SIGNATURE, detail=f"the OpenPGP signature does not verify ({_first_line(output)})")


def _first_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip() and not line.startswith("[GNUPG:]")]
    text = lines[0].removeprefix("error: ") if lines else "no reason given"
    return text if len(text) <= 300 else text[:297] + "..."


# -- running git and gpg --------------------------------------------------------------------------


def _run(
    command: Sequence[str], env: Mapping[str, str], stdin: bytes | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    """One bounded process (processes.py: its own session, its group killed at the deadline).
    CannotVerify when it cannot be started or does not finish within TIMEOUT."""
    name = Path(command[0]).name
    try:
        return run_bounded(command, env=env, timeout=TIMEOUT, stdin=stdin, cwd=cwd)
    except OSError as error:
        raise CannotVerify(f"{name} could not be started ({error.strerror})") from None
    except subprocess.TimeoutExpired:
        raise CannotVerify(f"{name} did not finish within {TIMEOUT:.0f} s") from None


def _text(result: subprocess.CompletedProcess[bytes]) -> str:
    return (result.stdout + result.stderr).decode("utf-8", "replace")


class _Session:
    """One public call: a private temporary directory (HOME for git, and the GnuPG home, made
    when the first OpenPGP signature needs it), the environment, and the removal of it all."""

    def __init__(self, repo: Path, trust: Trust, env: Mapping[str, str] | None):
        self.repo = repo
        self.trust = trust
        self.directory = Path(tempfile.mkdtemp(prefix="composeflux-verify-"))  # mode 0700
        self.gnupg_home = self.directory / "gnupg"
        self.fingerprints: frozenset[str] | None = None
        home = self.directory / "home"
        home.mkdir(mode=0o700)
        inherited = {k: v for k, v in os.environ.items() if k not in REPOSITORY_VARIABLES}
        given = {k: v for k, v in (env or {}).items() if k not in REPOSITORY_VARIABLES}
        self.env = {
            **inherited,
            **given,
            "LC_ALL": "C",
            "LANGUAGE": "C",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "",
            "SSH_ASKPASS": "",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_NO_REPLACE_OBJECTS": "1",
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "GNUPGHOME": str(self.gnupg_home),
        }
        self.gpg = shutil.which("gpg", path=self.env.get("PATH"))
        self.ssh_keygen = shutil.which("ssh-keygen", path=self.env.get("PATH"))

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, *_: object) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def git(self, *arguments: str) -> subprocess.CompletedProcess[bytes]:
        return _run(["git", "-C", str(self.repo), *arguments], self.env)

    def resolve(self, revision: str, kind: str) -> str:
        """The full id of the object `revision` names, peeled to `kind`; CannotVerify if none."""
        result = self.git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{revision}^{{{kind}}}")
        object_id = result.stdout.decode("ascii", "replace").strip()
        if result.returncode != 0 or not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", object_id):
            problem = _first_line(result.stderr.decode("utf-8", "replace")) if result.stderr.strip() else f"not a {kind} in {self.repo}"
            raise CannotVerify(f"cannot verify {revision}: {problem}")
        return object_id

    def read_object(self, object_id: str, kind: str) -> bytes:
        result = self.git("cat-file", kind, object_id)
        if result.returncode != 0:
            raise CannotVerify(f"cannot read {kind} {object_id[:12]}: {_first_line(_text(result))}")
        return result.stdout

    def tags(self, pattern: str) -> list[tuple[str, str, str]]:
        """(object id, object type, ref name) of the matching tags, newest first."""
        result = self.git(
            "for-each-ref", "--format=%(objectname) %(objecttype) %(refname)",
            "--sort=-v:refname", "--sort=-creatordate",  # the last --sort is the first key
            f"refs/tags/{pattern}",
        )  # fmt: skip
        if result.returncode != 0:
            raise CannotVerify(f"cannot list the tags of {self.repo}: {_first_line(_text(result))}")
        rows = []
        for line in result.stdout.decode("utf-8", "replace").splitlines():
            object_id, object_type, refname = line.split(" ", 2)
            rows.append((object_id, object_type, refname))
        return rows

    def verify_tag(self, object_id: str, object_type: str, refname: str) -> tuple[str, str]:
        """(commit, signer) of a signed tag object that verifies and was signed under the name
        it is found under (a release's signed tag pushed again as refs/tags/<another name> is
        not that other release); SignatureError if not."""
        if object_type != "tag":
            raise SignatureError(UNSIGNED, f"a lightweight tag, pointing at a {object_type} directly: it carries no signature")
        body = self.read_object(object_id, "tag")
        kind = _tag_signature_kind(body)
        if kind is None:
            raise SignatureError(UNSIGNED, "an annotated tag without a signature")
        verdict = self.verify("verify-tag", object_id, kind)
        if verdict.signer is None:
            raise SignatureError(verdict.reason, verdict.detail)
        name = _tag_name(body)
        if name != refname.removeprefix("refs/tags/"):
            raise SignatureError(BAD_SIGNATURE, f"signed as tag {name or '(no name)'}, not as {refname.removeprefix('refs/tags/')}")
        result = self.git("rev-parse", "--verify", "--quiet", f"{object_id}^{{commit}}")
        if result.returncode != 0:
            raise SignatureError(NO_VALID_TAG, "signed, but it does not point at a commit")
        return result.stdout.decode("ascii").strip(), verdict.signer

    def verify(self, command: str, object_id: str, kind: str | None) -> Verdict:
        """`git verify-commit` or `verify-tag --raw` of one object whose signature is of `kind`."""
        if kind is None:
            return Verdict(reason=UNSIGNED, detail="not signed")
        if kind == "ssh" and self.trust.allowed_signers is None:
            return Verdict(reason=UNKNOWN_KEY, detail="signed with an SSH key, but no allowed signers file is configured")
        if kind == "openpgp" and self.trust.keyring is None:
            return Verdict(reason=UNKNOWN_KEY, detail="signed with an OpenPGP key, but no keyring is configured")
        if kind not in ("ssh", "openpgp"):
            return Verdict(reason=UNKNOWN_KEY, detail=f"signed with a kind of signature composeflux does not accept ({kind})")
        if kind == "ssh":
            full = self._existing(self.trust.allowed_signers, "allowed signers file")
            signers = self._valid_now(full)
            if self.ssh_keygen is None:
                raise CannotVerify("ssh-keygen is not installed (Debian package openssh-client)")
            trusted: frozenset[str] = frozenset()
        else:
            signers = None
            trusted = self._gnupg()
        result = self._verify(command, object_id, signers)
        output = _text(result)
        if kind == "ssh":
            verdict = read_ssh_output(output, result.returncode == 0, self.trust.allowed_signers)
            if verdict.reason == UNKNOWN_KEY and signers != full:
                # Not among the entries valid now: is it one of those left out (expired)?
                again = self._verify(command, object_id, full)
                if read_ssh_output(_text(again), again.returncode == 0, full).reason in (None, EXPIRED_KEY):
                    return Verdict(reason=EXPIRED_KEY, detail=f"signed with a key whose entry in {full} is not valid now")
            return verdict
        return read_gpg_status(output, result.returncode == 0, trusted, self.trust.keyring)

    def _verify(self, command: str, object_id: str, signers: Path | None) -> subprocess.CompletedProcess[bytes]:
        return self.git(
            "-c", f"gpg.program={self.gpg or 'gpg'}",
            "-c", f"gpg.openpgp.program={self.gpg or 'gpg'}",
            "-c", f"gpg.ssh.program={self.ssh_keygen or 'ssh-keygen'}",
            "-c", "gpg.x509.program=false",
            "-c", f"gpg.ssh.allowedSignersFile={signers or os.devnull}",
            "-c", "gpg.minTrustLevel=fully",
            command, "--raw", object_id,
        )  # fmt: skip

    def _valid_now(self, path: Path) -> Path:
        """The allowed signers valid now: git checks an entry's valid-after/valid-before at the
        commit's own date, which the signer chooses (a key that expired last year would still
        verify a commit dated before then); entries not valid at this moment are left out."""
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise CannotVerify(f"cannot read the allowed signers file {path}: {exc.strerror}") from None
        lines = text.splitlines()
        kept = [line for line in lines if signer_valid_at(line, datetime.datetime.now(datetime.UTC))]
        if len(kept) == len(lines):
            return path
        current = self.directory / "allowed_signers"
        current.write_text("\n".join(kept) + "\n", encoding="utf-8")
        return current

    @staticmethod
    def _existing(path: Path | None, what: str) -> Path:
        if path is None or not path.is_file():
            raise CannotVerify(f"the {what} {path} is not there (or not a regular file)")
        return path.resolve()

    def _gnupg(self) -> frozenset[str]:
        """The private GnuPG home with the keyring imported and every key of it given ultimate
        ownertrust (made once per call); the primary fingerprints it holds."""
        if self.fingerprints is not None:
            return self.fingerprints
        keyring = self._existing(self.trust.keyring, "keyring")
        if self.gpg is None:
            raise CannotVerify("gpg is not installed (Debian package gpg)")
        self.gnupg_home.mkdir(mode=0o700)
        (self.gnupg_home / "gpg.conf").write_text(GPG_CONF)
        gpg = [self.gpg, "--batch", "--no-tty", "--homedir", str(self.gnupg_home)]
        imported = _run([*gpg, "--status-fd", "1", "--import", str(keyring)], self.env)
        listing = _run([*gpg, "--with-colons", "--fixed-list-mode", "--list-keys"], self.env)
        fingerprints = _primary_fingerprints(listing.stdout.decode("utf-8", "replace"))
        if not fingerprints:
            raise CannotVerify(f"the keyring {keyring} holds no OpenPGP public key ({_gpg_reason(imported)})")
        if imported.returncode != 0:
            log.warning("gpg could not import all of %s (%s); the keys it did import are trusted", keyring, _gpg_reason(imported))
        ownertrust = "".join(f"{fingerprint}:6:\n" for fingerprint in sorted(fingerprints))
        trusted = _run([*gpg, "--import-ownertrust"], self.env, stdin=ownertrust.encode())
        if trusted.returncode != 0:
            raise CannotVerify(f"gpg could not trust the keys of {keyring}: {_gpg_reason(trusted)}")
        self.fingerprints = fingerprints
        return fingerprints


def _primary_fingerprints(colons: str) -> frozenset[str]:
    """The fingerprints of the primary keys in `gpg --with-colons --list-keys` output (the fpr
    record right after each pub record)."""
    fingerprints = set()
    after_pub = False
    for line in colons.splitlines():
        fields = line.split(":")
        if fields[0] == "pub":
            after_pub = True
        elif fields[0] == "fpr" and after_pub and len(fields) > 9:
            fingerprints.add(fields[9].upper())
            after_pub = False
    return frozenset(fingerprints)


def _gpg_reason(result: subprocess.CompletedProcess[bytes]) -> str:
    lines = [line.strip().removeprefix("gpg: ") for line in result.stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1] if lines else f"gpg exited with status {result.returncode}"
