"""Webhook deliveries as GitHub, Gitea, Forgejo, Gogs and GitLab send them: the headers each
forge sets (Gitea and Forgejo also send the Gogs and GitHub ones), its signature over the raw
body, and push payloads shaped like the real ones (abridged: the fields that matter and their
neighbours, with the values a real delivery has, URLs in each forge's own forms).

The receiver under test is composeflux's; these are the forges' side of the boundary.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import urllib.parse
import uuid
from typing import Any

FORGES = ("github", "gitea", "forgejo", "gogs", "gitlab")
COMMIT = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"
BEFORE = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
ZERO = "0" * 40

# Where each forge's test repository lives, and the GIT_REPO_URL a host deploying it would use
# (another transport than the payload's clone URL, on purpose).
REPOSITORIES = {
    "github": ("https://github.com/home/stacks", "git@github.com:home/stacks.git"),
    "gitea": ("https://git.example.org/home/stacks", "ssh://git@git.example.org:2222/home/stacks.git"),
    "forgejo": ("https://codeberg.org/home/stacks", "https://codeberg.org/home/stacks.git"),
    "gogs": ("http://gogs.example.org:3000/home/stacks", "git@gogs.example.org:home/stacks.git"),
    "gitlab": ("https://gitlab.example.org/home/stacks", "git@gitlab.example.org:home/stacks.git"),
}


def repo_url(forge: str) -> str:
    """The GIT_REPO_URL of a host that deploys this forge's test repository."""
    return REPOSITORIES[forge][1]


def _urls(web: str) -> dict[str, str]:
    parts = urllib.parse.urlsplit(web)
    host, path = parts.hostname, parts.path.strip("/")
    return {"web": web, "clone": f"{web}.git", "ssh": f"git@{host}:{path}.git", "path": path, "name": path.rsplit("/", 1)[-1]}


def _commit(web: str, forge: str, commit: str = COMMIT) -> dict[str, Any]:
    url = f"{web}/-/commit/{commit}" if forge == "gitlab" else f"{web}/commit/{commit}"
    entry: dict[str, Any] = {
        "id": commit, "message": "web: bump nginx to 1.27\n", "timestamp": "2024-05-02T10:17:41+02:00", "url": url,
        "author": {"name": "Kim Home", "email": "kim@example.org"}, "added": [], "modified": ["web/compose.yaml"], "removed": [],
    }
    if forge == "github":
        entry.update(tree_id="f9d2a07e9488b91af2641b26b9407fe22a451433", distinct=True,
                     committer={"name": "Kim Home", "email": "kim@example.org", "username": "kim"})
        entry["author"]["username"] = "kim"
    elif forge in ("gitea", "forgejo", "gogs"):
        entry.update(committer={"name": "Kim Home", "email": "kim@example.org", "username": "kim"}, verification=None)
        entry["author"]["username"] = "kim"
    elif forge == "gitlab":
        entry["title"] = "web: bump nginx to 1.27"
    return entry


def push_payload(forge: str, *, ref: str = "refs/heads/main", after: str = COMMIT, web: str | None = None,
                 deleted: bool = False) -> dict[str, Any]:
    """A push event's payload as ``forge`` sends it (``deleted``: the ref was removed)."""
    web = web or REPOSITORIES[forge][0]
    urls = _urls(web)
    after = ZERO if deleted else after
    commits = [] if deleted else [_commit(web, forge, after)]
    if forge == "gitlab":
        project = {
            "id": 15, "name": urls["name"], "description": "", "web_url": web, "avatar_url": None,
            "git_ssh_url": urls["ssh"], "git_http_url": urls["clone"], "namespace": "home", "visibility_level": 0,
            "path_with_namespace": urls["path"], "default_branch": "main", "ci_config_path": None,
            "homepage": web, "url": urls["ssh"], "ssh_url": urls["ssh"], "http_url": urls["clone"],
        }
        kind = "tag_push" if ref.startswith("refs/tags/") else "push"
        return {
            "object_kind": kind, "event_name": kind, "before": BEFORE, "after": after, "ref": ref, "ref_protected": True,
            "checkout_sha": None if deleted else after, "message": None, "user_id": 4, "user_name": "Kim Home",
            "user_username": "kim", "user_email": "", "user_avatar": "https://gitlab.example.org/uploads/-/system/user/avatar/4/avatar.png",
            "project_id": 15, "project": project, "commits": commits, "total_commits_count": len(commits), "push_options": {},
            "repository": {"name": urls["name"], "url": urls["ssh"], "description": "", "homepage": web,
                           "git_http_url": urls["clone"], "git_ssh_url": urls["ssh"], "visibility_level": 0},
        }
    owner = {"id": 1, "login": "home", "username": "home", "full_name": "", "email": "", "avatar_url": ""}
    repository: dict[str, Any] = {
        "id": 7, "owner": owner, "name": urls["name"], "full_name": urls["path"], "description": "", "private": True,
        "fork": False, "html_url": web, "ssh_url": urls["ssh"], "clone_url": urls["clone"], "website": "",
        "default_branch": "main",
    }
    if forge == "github":
        owner.update(name="home", type="Organization", node_id="MDEyOk9yZ2FuaXphdGlvbjE=")
        repository.update(node_id="MDEwOlJlcG9zaXRvcnk3", url=web, git_url=f"git://github.com/{urls['path']}.git", svn_url=web,
                          master_branch="main", pushed_at=1714637861, created_at=1557933565, stargazers=0)
        del repository["website"]
    elif forge in ("gitea", "forgejo"):
        host = urllib.parse.urlsplit(web).netloc
        repository.update(url=f"{urllib.parse.urlsplit(web).scheme}://{host}/api/v1/repos/{urls['path']}", empty=False,
                          template=False, parent=None, mirror=False, size=112, language="", original_url="",
                          # Gitea's SSH URL names its own SSH port when it is not 22.
                          ssh_url=f"ssh://git@{urllib.parse.urlsplit(web).hostname}:2222/{urls['path']}.git")
    payload: dict[str, Any] = {
        "ref": ref, "before": BEFORE, "after": after,
        "compare_url" if forge != "github" else "compare": f"{web}/compare/{BEFORE[:12]}...{after[:12]}",
        "commits": commits, "head_commit": commits[0] if commits else None, "repository": repository,
        "pusher": {"id": 2, "login": "kim", "name": "kim", "email": "kim@example.org"},
        "sender": {"id": 2, "login": "kim", "username": "kim", "avatar_url": ""},
    }
    if forge == "github":
        payload.update(created=False, deleted=deleted, forced=False, base_ref=None)
    elif forge in ("gitea", "forgejo"):
        payload["total_commits"] = len(commits)
    return payload


def ping_payload() -> dict[str, Any]:
    """GitHub's ping, sent when a webhook is created (and by its Redeliver on a ping)."""
    return {"zen": "Keep it logically awesome.", "hook_id": 292430182,
            "hook": {"type": "Repository", "id": 292430182, "name": "web", "active": True, "events": ["push"],
                     "config": {"content_type": "json", "insecure_ssl": "0", "url": "https://hooks.example.org/composeflux"}},
            "repository": push_payload("github")["repository"], "sender": {"login": "kim", "id": 2}}


def hmac_hex(secret: bytes, body: bytes) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def headers_for(forge: str, body: bytes, secret: bytes | None, *, event: str | None = None) -> dict[str, str]:
    """The headers ``forge`` sends with ``body`` (``secret`` None: a webhook without a secret)."""
    delivery = str(uuid.uuid4())
    if forge == "gitlab":
        headers = {"Content-Type": "application/json", "User-Agent": "GitLab/16.11.6", "X-Gitlab-Event": event or "Push Hook",
                   "X-Gitlab-Event-UUID": delivery, "X-Gitlab-Webhook-UUID": str(uuid.uuid4()),
                   "X-Gitlab-Instance": "https://gitlab.example.org"}
        if secret is not None:
            headers["X-Gitlab-Token"] = secret.decode()
        return headers
    event = event or "push"
    sha256 = hmac_hex(secret, body) if secret is not None else None
    sha1 = hmac.new(secret, body, hashlib.sha1).hexdigest() if secret is not None else None
    if forge == "github":
        headers = {"Content-Type": "application/json", "User-Agent": "GitHub-Hookshot/044aadd", "X-GitHub-Event": event,
                   "X-GitHub-Delivery": delivery, "X-GitHub-Hook-ID": "292430182",
                   "X-GitHub-Hook-Installation-Target-ID": "79929171", "X-GitHub-Hook-Installation-Target-Type": "repository"}
        if secret is not None:
            headers |= {"X-Hub-Signature": f"sha1={sha1}", "X-Hub-Signature-256": f"sha256={sha256}"}
        return headers
    if forge == "gogs":
        headers = {"Content-Type": "application/json", "User-Agent": "GogsServer", "X-Gogs-Event": event, "X-Gogs-Delivery": delivery}
        if secret is not None:
            headers["X-Gogs-Signature"] = sha256
        return headers
    # Gitea, and Forgejo on top: every forge's names at once.
    headers = {"Content-Type": "application/json", "User-Agent": "Go-http-client/1.1"}
    names = ["Gitea", "Gogs", "GitHub"] if forge == "gitea" else ["Forgejo", "Gitea", "Gogs", "GitHub"]
    for name in names:
        headers |= {f"X-{name}-Delivery": delivery, f"X-{name}-Event": event, f"X-{name}-Event-Type": event}
        if secret is not None and name != "GitHub":
            headers[f"X-{name}-Signature"] = sha256
    if secret is not None:
        headers |= {"X-Hub-Signature": f"sha1={sha1}", "X-Hub-Signature-256": f"sha256={sha256}"}
    return headers


def delivery(forge: str, payload: dict[str, Any], secret: bytes | None, *, event: str | None = None,
             form: bool = False) -> tuple[dict[str, str], bytes]:
    """(headers, body) of one delivery; ``form``: the form-encoded content type GitHub, Gitea and
    Gogs offer (payload=<json>)."""
    text = json.dumps(copy.deepcopy(payload), indent=2)
    if form:
        body = urllib.parse.urlencode({"payload": text}).encode("ascii")
        headers = headers_for(forge, body, secret, event=event)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return headers, body
    body = text.encode("utf-8")
    return headers_for(forge, body, secret, event=event), body
