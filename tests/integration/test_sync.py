"""`composeflux sync` against a real Docker engine, real Compose v2 and real Git remotes."""

from __future__ import annotations

import re
import shutil
import time

import pytest

from tests.conftest import TEST_IMAGE, container_ids, containers, run, service_yaml

pytestmark = pytest.mark.docker


def deployed_order(stderr: str) -> list[str]:
    return re.findall(r"^(\S+): Deploying:", stderr, flags=re.MULTILINE)


def test_first_deploy_then_noop_recreates_nothing(cfx, repo, prefix):
    for name in ("alpha", "beta", "gamma"):
        repo.add_stack(f"{prefix}-{name}", services=("app", "worker"))
    commit = repo.commit("three stacks")

    first = cfx.sync()
    assert "3 deployed, 0 unchanged, 0 pruned, 0 failed" in first.stderr
    before = {}
    for name in ("alpha", "beta", "gamma"):
        found = containers(f"{prefix}-{name}")
        assert set(found) == {"app", "worker"}
        for info in found.values():
            assert info.state == "running"
            assert info.labels["compose.stack.managed-by"] == "composeflux"
            assert info.labels["compose.stack.commit"] == commit
            assert re.fullmatch(r"[0-9a-f]{64}", info.labels["compose.stack.hash"])
            assert re.fullmatch(r"[0-9a-f]{64}", info.labels["compose.stack.service-hash"])
        before[name] = container_ids(f"{prefix}-{name}")

    second = cfx.sync()
    assert "0 deployed, 3 unchanged, 0 pruned, 0 failed" in second.stderr
    assert {name: container_ids(f"{prefix}-{name}") for name in before} == before

    state = cfx.last_state()
    assert state["commit"] == commit and state["result"] == "ok"
    assert {state["stacks"][f"{prefix}-{n}"]["action"] for n in before} == {"unchanged"}


def test_dry_run_prints_the_plan_and_changes_nothing(cfx, repo, prefix):
    repo.add_stack(f"{prefix}-web")
    repo.commit()
    result = cfx.sync("--dry-run")
    assert re.search(rf"^deploy\s+{prefix}-web\s+[0-9a-f]{{12}}\s+new$", result.stdout, flags=re.MULTILINE)
    assert "dry run: 1 to deploy" in result.stderr
    assert container_ids(f"{prefix}-web") == {}

    cfx.sync()
    repo.remove(f"{prefix}-web")
    repo.add_stack(f"{prefix}-api")
    repo.commit()
    result = cfx.sync("--dry-run")
    assert re.search(rf"^prune\s+{prefix}-web\s+deleted from Git$", result.stdout, flags=re.MULTILINE)
    assert container_ids(f"{prefix}-web") and not container_ids(f"{prefix}-api")


def test_one_edited_stack_redeploys_alone(cfx, repo, prefix):
    repo.add_stack(f"{prefix}-a", environment={"V": "1"})
    repo.add_stack(f"{prefix}-b", environment={"V": "1"})
    repo.commit()
    cfx.sync()
    a_before, b_before = container_ids(f"{prefix}-a"), container_ids(f"{prefix}-b")

    repo.add_stack(f"{prefix}-a", environment={"V": "2"})
    commit = repo.commit("edit a")
    result = cfx.sync()
    assert "1 deployed, 1 unchanged" in result.stderr
    assert deployed_order(result.stderr) == [f"{prefix}-a"]
    assert container_ids(f"{prefix}-a") != a_before
    assert container_ids(f"{prefix}-b") == b_before
    assert "V=2" in containers(f"{prefix}-a")["app"].env
    assert containers(f"{prefix}-a")["app"].labels["compose.stack.commit"] == commit


def test_changing_one_service_leaves_the_other_containers_untouched(cfx, repo, prefix):
    name = f"{prefix}-trio"
    repo.write(f"{name}/compose.yaml", service_yaml(("one", "two", "three")))
    repo.commit()
    cfx.sync()
    before = container_ids(name)
    assert len(before) == 3

    changed = service_yaml(("one", "two", "three")).replace(
        "  two:\n", "  two:\n    environment:\n      CHANGED: 'yes'\n"
    )
    repo.write(f"{name}/compose.yaml", changed)
    repo.commit("change service two")
    result = cfx.sync()
    assert "hash changed (services: two)" in result.stderr
    after = container_ids(name)
    assert after["one"] == before["one"] and after["three"] == before["three"]
    assert after["two"] != before["two"]
    # A second sync sees the partly recreated stack as converged.
    assert "0 deployed, 1 unchanged" in cfx.sync().stderr
    assert container_ids(name) == after


def test_edited_bind_mounted_file_redeploys_its_stack(cfx, repo, prefix):
    name = f"{prefix}-conf"
    repo.write(f"{name}/compose.yaml", service_yaml() + "    volumes:\n      - ./conf/app.ini:/etc/app.ini:ro\n")
    repo.write(f"{name}/conf/app.ini", "colour=blue\n")
    repo.add_stack(f"{prefix}-other")
    repo.commit()
    cfx.sync()
    before, other = container_ids(name), container_ids(f"{prefix}-other")

    repo.write(f"{name}/conf/app.ini", "colour=green\n")
    repo.commit("edit mounted file")
    result = cfx.sync()
    assert deployed_order(result.stderr) == [name]
    assert container_ids(name) != before
    assert container_ids(f"{prefix}-other") == other
    content = run("docker", "exec", containers(name)["app"].id, "cat", "/etc/app.ini").stdout
    assert content == "colour=green\n"


def test_stack_yml_env_redeploys_only_the_stacks_that_use_it(cfx, repo, prefix):
    repo.write("stack.yml", "envs:\n  GREETING: hello\n  UNUSED: x\n")
    repo.add_stack(f"{prefix}-user", environment={"GREETING": "${GREETING}"})
    repo.add_stack(f"{prefix}-plain")
    repo.commit()
    cfx.sync()
    assert "GREETING=hello" in containers(f"{prefix}-user")["app"].env
    plain = container_ids(f"{prefix}-plain")

    repo.write("stack.yml", "envs:\n  GREETING: bonjour\n  UNUSED: y\n")
    repo.commit("change env")
    result = cfx.sync()
    assert deployed_order(result.stderr) == [f"{prefix}-user"]
    assert "GREETING=bonjour" in containers(f"{prefix}-user")["app"].env
    assert container_ids(f"{prefix}-plain") == plain


def started_at(prefix: str, names: tuple[str, ...]) -> dict[str, str]:
    created = {name: containers(f"{prefix}-{name}")["app"].id for name in names}
    return {name: run("docker", "inspect", "-f", "{{.State.StartedAt}}", cid).stdout.strip() for name, cid in created.items()}


@pytest.mark.parametrize("jobs", [1, 4])
def test_startup_order_goes_first_one_by_one(cfx, repo, prefix, jobs):
    """The startup_order stacks start one after the other, in that order, before all others;
    the others follow by name, one by one with DEPLOY_JOBS=1, side by side otherwise."""
    names = ("zeta", "alpha", "mid", "db")
    for name in names:
        repo.add_stack(f"{prefix}-{name}")
    repo.write("stack.yml", f"startup_order:\n  - {prefix}-zeta\n  - {prefix}-db\n  - {prefix}-ghost\n")
    repo.commit()
    cfx.settings(DEPLOY_JOBS=jobs)
    result = cfx.sync()
    order = deployed_order(result.stderr)
    assert order[:2] == [f"{prefix}-zeta", f"{prefix}-db"], result.stderr
    assert f"startup_order names '{prefix}-ghost'" in result.stderr
    starts = started_at(prefix, names)
    assert starts["zeta"] < starts["db"] < min(starts["alpha"], starts["mid"]), (starts, result.stderr)
    if jobs == 1:
        assert order == [f"{prefix}-zeta", f"{prefix}-db", f"{prefix}-alpha", f"{prefix}-mid"]
        assert starts["alpha"] < starts["mid"]
    else:
        assert sorted(order[2:]) == [f"{prefix}-alpha", f"{prefix}-mid"]


def test_deleted_stack_is_pruned_and_unmanaged_projects_are_left_alone(cfx, repo, prefix, tmp_path):
    repo.add_stack(f"{prefix}-keep")
    repo.add_stack(f"{prefix}-gone")
    repo.commit()
    cfx.sync()
    unmanaged = tmp_path / "unmanaged"
    unmanaged.mkdir()
    (unmanaged / "compose.yaml").write_text(service_yaml())
    run("docker", "compose", "-p", f"{prefix}-manual", "up", "-d", cwd=unmanaged)
    manual = container_ids(f"{prefix}-manual")
    run("docker", "volume", "create", "--label", "com.docker.compose.project=x", f"{prefix}-gone_data")

    repo.remove(f"{prefix}-gone")
    repo.commit("delete a stack")
    result = cfx.sync()
    assert "0 deployed, 1 unchanged, 1 pruned, 0 failed" in result.stderr
    assert container_ids(f"{prefix}-gone") == {}
    assert container_ids(f"{prefix}-keep")
    assert container_ids(f"{prefix}-manual") == manual
    assert f"{prefix}-gone_data" in run("docker", "volume", "ls", "-q").stdout.split()  # volumes are kept


def test_stack_with_the_name_of_an_unmanaged_project_is_refused(cfx, repo, prefix, tmp_path):
    unmanaged = tmp_path / "unmanaged"
    unmanaged.mkdir()
    (unmanaged / "compose.yaml").write_text(service_yaml())
    run("docker", "compose", "-p", f"{prefix}-taken", "up", "-d", cwd=unmanaged)
    manual = container_ids(f"{prefix}-taken")
    repo.add_stack(f"{prefix}-taken", environment={"X": "1"})
    repo.commit()
    result = cfx.sync(expect=1)
    assert "already exists, not deployed by composeflux" in result.stderr
    assert container_ids(f"{prefix}-taken") == manual


def test_force_push_to_an_older_commit_converges(cfx, repo, prefix):
    repo.add_stack(f"{prefix}-app", environment={"RELEASE": "1"})
    old = repo.commit("release 1")
    cfx.sync()
    repo.add_stack(f"{prefix}-app", environment={"RELEASE": "2"})
    repo.add_stack(f"{prefix}-extra")
    repo.commit("release 2")
    cfx.sync()
    assert "RELEASE=2" in containers(f"{prefix}-app")["app"].env

    repo.force_push(old)
    result = cfx.sync()
    assert "1 deployed, 0 unchanged, 1 pruned" in result.stderr
    assert "RELEASE=1" in containers(f"{prefix}-app")["app"].env
    assert container_ids(f"{prefix}-extra") == {}
    assert cfx.last_state()["commit"] == old


def test_broken_compose_file_fails_alone(cfx, repo, prefix):
    repo.add_stack(f"{prefix}-good")
    repo.write(f"{prefix}-bad/compose.yaml", "services:\n  app:\n    image: [not, a, string\n")
    repo.write(f"{prefix}-Bad_Name/compose.yaml", service_yaml())
    repo.commit()
    result = cfx.sync(expect=1)
    assert container_ids(f"{prefix}-good")
    assert f"{prefix}-bad: docker compose config failed" in result.stderr
    # A directory name Compose would not take as it is gets the name Compose gives it.
    assert container_ids(f"{prefix}-bad_name") and f"deployed as the Compose project {prefix}-bad_name" in result.stderr
    assert f"2 deployed, 0 unchanged, 0 pruned, 1 failed ({prefix}-bad)" in result.stderr
    assert cfx.last_state()["stacks"][f"{prefix}-bad"]["action"] == "failed"


def test_unset_variable_blocks_only_its_stack(cfx, repo, prefix):
    repo.add_stack(f"{prefix}-needs", environment={"TOKEN": "${API_TOKEN}", "OPT": "${OPTIONAL:-fine}"})
    repo.add_stack(f"{prefix}-fine")
    repo.commit()
    result = cfx.sync(expect=1, env={"API_TOKEN": "from-the-host-environment"})
    assert "variable(s) API_TOKEN used without a value or default" in result.stderr
    assert container_ids(f"{prefix}-needs") == {}  # not deployed with a blank value
    assert container_ids(f"{prefix}-fine")
    assert "from-the-host-environment" not in result.stderr  # and the host environment did not leak in


def test_emptied_stack_path_prunes_nothing_without_explicit_permission(cfx, repo, prefix):
    repo.add_stack(f"{prefix}-one")
    repo.add_stack(f"{prefix}-two")
    repo.commit()
    cfx.sync()
    before = {n: container_ids(f"{prefix}-{n}") for n in ("one", "two")}

    repo.remove(f"{prefix}-one")
    repo.remove(f"{prefix}-two")
    repo.write("README", "empty\n")
    repo.commit("empty the stack path")
    result = cfx.sync(expect=6)
    assert "refusing to remove them all" in result.stderr and "--allow-prune-all" in result.stderr
    assert {n: container_ids(f"{prefix}-{n}") for n in before} == before

    shutil.rmtree(repo.work / "stacks")
    repo.commit("remove STACK_PATH itself")
    result = cfx.sync(expect=6)
    assert "STACK_PATH stacks does not exist" in result.stderr
    assert {n: container_ids(f"{prefix}-{n}") for n in before} == before

    result = cfx.sync("--allow-prune-all")
    assert container_ids(f"{prefix}-one") == {} and container_ids(f"{prefix}-two") == {}


def test_broken_clone_is_rebuilt_and_an_unreachable_remote_changes_nothing(cfx, repo, prefix):
    repo.add_stack(f"{prefix}-svc")
    repo.commit()
    cfx.sync()
    before = container_ids(f"{prefix}-svc")
    clone = cfx.state / "repo"

    # Corrupt the clone: its object store and HEAD are gone.
    shutil.rmtree(clone / ".git" / "objects")
    (clone / ".git" / "HEAD").write_text("garbage\n")
    result = cfx.sync()
    assert "re-initialising it" in result.stderr
    assert "0 deployed, 1 unchanged, 0 pruned" in result.stderr
    assert container_ids(f"{prefix}-svc") == before

    # A remote that has gone away: exit 4, nothing pruned or redeployed.
    repo.remote.rename(repo.remote.with_name("moved.git"))
    result = cfx.sync(expect=4)
    assert "cannot fetch branch main" in result.stderr
    assert container_ids(f"{prefix}-svc") == before
    assert cfx.last_state()["result"] == "error"


def test_untracked_bind_mount_data_in_the_checkout_survives(cfx, repo, prefix):
    name = f"{prefix}-data"
    repo.write(f"{name}/compose.yaml", service_yaml() + "    volumes:\n      - ./data:/data\n")
    repo.commit()
    cfx.sync()
    container = containers(name)["app"].id
    run("docker", "exec", container, "sh", "-c", "echo precious > /data/db")
    repo.write(f"{name}/README", "docs\n")
    repo.commit("unrelated change")
    result = cfx.sync()
    assert "0 deployed, 1 unchanged" in result.stderr  # untracked data is not part of the hash
    assert (cfx.state / "stacks" / name / "stacks" / name / "data" / "db").read_text() == "precious\n"


def test_two_instances_share_one_engine(cfx, repo, prefix, tmp_path):
    repo.add_stack(f"{prefix}-one")
    repo.write(f"../other/{prefix}-two/compose.yaml", service_yaml())
    repo.commit()
    other_state = tmp_path / "state-other"
    other_env = {"STATE_DIRECTORY": str(other_state), "STACK_PATH": "other"}
    cfx.sync()
    cfx.sync(env=other_env)
    one, two = container_ids(f"{prefix}-one"), container_ids(f"{prefix}-two")
    assert one and two
    instance = "compose.stack.instance"
    assert containers(f"{prefix}-one")["app"].labels[instance] != containers(f"{prefix}-two")["app"].labels[instance]

    # Deleting instance two's only stack: instance one must not touch it, and two prunes it
    # only when told that an empty STACK_PATH is intended.
    repo.remove(f"../other/{prefix}-two")
    repo.commit()
    assert "0 deployed, 1 unchanged, 0 pruned" in cfx.sync().stderr
    assert container_ids(f"{prefix}-two") == two
    cfx.sync("--allow-prune-all", env=other_env)
    assert container_ids(f"{prefix}-two") == {}
    assert container_ids(f"{prefix}-one") == one


def test_concurrent_syncs_do_not_overlap(cfx, repo, prefix):
    for name in ("p", "q"):
        repo.add_stack(f"{prefix}-{name}")
    repo.commit()
    first, second = cfx.popen(), cfx.popen()
    outputs = [process.communicate(timeout=300) for process in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    stderr = [err for _, err in outputs]
    waited = [err for err in stderr if "Another sync (pid" in err]
    assert len(waited) == 1, stderr
    # The one that waited found everything already deployed by the other.
    assert "0 deployed, 2 unchanged" in waited[0]
    assert sum("2 deployed" in err for err in stderr) == 1


def test_compose_include_extends_env_file_and_configs(cfx, repo, prefix):
    name = f"{prefix}-features"
    repo.write("shared/base.yaml", service_yaml(("base",)))
    repo.write("shared/common.env", "FROM_ENV_FILE=1\n")
    repo.write(f"{name}/compose.yaml", """\
        include:
          - sidecar.yaml
        services:
          app:
            extends:
              file: ../shared/base.yaml
              service: base
            env_file: ../shared/common.env
            configs:
              - source: settings
                target: /etc/settings.conf
        configs:
          settings:
            file: ./settings.conf
        """)
    repo.write(f"{name}/sidecar.yaml", service_yaml(("sidecar",)))
    repo.write(f"{name}/settings.conf", "mode=one\n")
    repo.commit()
    cfx.sync()
    found = containers(name)
    assert set(found) == {"app", "sidecar"}
    assert "FROM_ENV_FILE=1" in found["app"].env
    assert run("docker", "exec", found["app"].id, "cat", "/etc/settings.conf").stdout == "mode=one\n"

    # Each referenced file is part of the hash: editing it redeploys exactly the service using it.
    for path, text in (("shared/common.env", "FROM_ENV_FILE=2\n"), (f"{name}/settings.conf", "mode=two\n"),
                       ("shared/base.yaml", service_yaml(("base",)).replace("stop_grace_period: 1s", "stop_grace_period: 2s"))):
        before = container_ids(name)
        repo.write(path, text)
        repo.commit(f"edit {path}")
        result = cfx.sync()
        assert "1 deployed" in result.stderr, (path, result.stderr)
        after = container_ids(name)
        assert after["app"] != before["app"] and after["sidecar"] == before["sidecar"], path
    assert "FROM_ENV_FILE=2" in containers(name)["app"].env


def test_clone_over_ssh_with_a_deploy_key(cfx, repo, prefix, sshd):
    repo.add_stack(f"{prefix}-ssh")
    repo.commit()
    cfx.settings(
        GIT_REPO_URL=sshd.url(repo.remote), GIT_SSH_KEY_PATH=sshd.client_key, GIT_SSH_KNOWN_HOSTS=sshd.known_hosts
    )
    cfx.sync()
    assert container_ids(f"{prefix}-ssh")
    assert "IdentitiesOnly" not in (cfx.state / "repo" / ".git" / "config").read_text()

    # An unknown host key is refused (no trust on first use unless asked for).
    sshd.known_hosts.write_text("")
    result = cfx.sync(expect=4)
    assert "Host key verification failed" in result.stderr
    cfx.settings(GIT_SSH_HOST_KEY_CHECKING="accept-new")
    cfx.sync()
    host_key = (sshd.client_key.parent / "host_key.pub").read_text().split()[1]
    assert host_key in sshd.known_hosts.read_text()


def test_services_removed_from_a_stack_are_removed(cfx, repo, prefix):
    name = f"{prefix}-shrink"
    repo.write(f"{name}/compose.yaml", service_yaml(("keep", "drop")))
    repo.commit()
    cfx.sync()
    keep = container_ids(name)["keep"]
    repo.write(f"{name}/compose.yaml", service_yaml(("keep",)))
    repo.commit()
    result = cfx.sync()
    assert "services removed from Git: drop" in result.stderr
    assert container_ids(name) == {"keep": keep}


def test_secrets_in_hash_labels_are_not_guessable(cfx, repo, prefix):
    """Two hosts (state dirs) hash the same project differently: the key is per host."""
    repo.add_stack(f"{prefix}-h", environment={"IMAGE": TEST_IMAGE})
    repo.commit()
    first = cfx.sync("--dry-run").stdout
    shutil.rmtree(cfx.state)
    second = cfx.sync("--dry-run").stdout
    assert first.split()[2] != second.split()[2]
    assert (cfx.state / "hash.key").stat().st_mode & 0o777 == 0o600


def test_stopped_container_is_restarted(cfx, repo, prefix):
    repo.add_stack(f"{prefix}-st")
    repo.commit()
    cfx.sync()
    run("docker", "stop", "-t", "1", containers(f"{prefix}-st")["app"].id)
    result = cfx.sync()
    assert "not running (services: app)" in result.stderr
    deadline = time.monotonic() + 30
    while containers(f"{prefix}-st")["app"].state != "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_https_token_is_used_but_never_stored_or_logged(cfx, repo, prefix, git_http):
    repo.add_stack(f"{prefix}-web")
    repo.commit()
    cfx.settings(GIT_REPO_URL=git_http.url(repo.remote), GIT_USERNAME=git_http.user, GIT_TOKEN=git_http.token)
    result = cfx.sync("--log-level", "DEBUG")
    assert container_ids(f"{prefix}-web")
    clone = cfx.state / "repo" / ".git"
    stored = "".join(p.read_text(errors="replace") for p in clone.rglob("*") if p.is_file() and p.stat().st_size < 1_000_000)
    assert git_http.token not in stored and git_http.token not in result.stderr

    # The token may also come inside the URL; it is split off the same way.
    host_url = git_http.url(repo.remote).replace("http://", f"http://{git_http.user}:{git_http.token}@")
    cfx.settings(GIT_REPO_URL=host_url, GIT_TOKEN="", GIT_USERNAME="")
    cfx.sync()
    assert git_http.token not in (clone / "config").read_text()

    cfx.settings(GIT_REPO_URL=git_http.url(repo.remote), GIT_USERNAME=git_http.user, GIT_TOKEN="wrong-token-value")
    result = cfx.sync(expect=4)
    assert "cannot fetch branch main" in result.stderr and "wrong-token-value" not in result.stderr
    assert container_ids(f"{prefix}-web")


def test_progress_reaches_systemd_through_sd_notify(cfx, repo, prefix, tmp_path):
    import socket as sockets

    repo.add_stack(f"{prefix}-n1")
    repo.add_stack(f"{prefix}-n2")
    repo.commit()
    path = str(tmp_path / "notify.sock")
    with sockets.socket(sockets.AF_UNIX, sockets.SOCK_DGRAM) as server:
        server.bind(path)
        cfx.sync(env={"NOTIFY_SOCKET": path})
        server.settimeout(1)
        messages = []
        while True:
            try:
                messages.append(server.recv(4096).decode())
            except TimeoutError:
                break
    assert messages[0] == "STATUS=fetching secrets"
    assert "STATUS=fetching Git" in messages
    assert f"STATUS=deploying 1/2: {prefix}-n1" in messages
    # side by side (DEPLOY_JOBS): the second one starts while the first may still run
    second = [m for m in messages if m.startswith("STATUS=deploying 2/2: ")]
    assert second and f"{prefix}-n2" in second[0], messages
    assert messages[-1] == "STATUS=2 deployed, 0 unchanged, 0 pruned, 0 failed"


def test_branch_change_and_interrupted_first_clone_converge(cfx, repo, prefix):
    repo.add_stack(f"{prefix}-main-only")
    repo.commit()
    repo.git("checkout", "-q", "-b", "staging")
    repo.remove(f"{prefix}-main-only")
    repo.add_stack(f"{prefix}-staging-only")
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "staging")
    repo.git("push", "-q", "origin", "staging")

    # A first clone killed half-way leaves its temporary directory behind; it is not used.
    leftover = cfx.state / ".repo.clone-interrupted"
    (leftover / ".git").mkdir(parents=True)
    cfx.sync()
    assert not leftover.exists()
    assert container_ids(f"{prefix}-main-only")

    result = cfx.sync("--branch", "staging")
    assert "branch staging" in result.stderr
    assert container_ids(f"{prefix}-staging-only") and not container_ids(f"{prefix}-main-only")


def test_status_shows_the_last_result(cfx, repo, prefix):
    import subprocess

    from tests.conftest import PYTHON

    def status():
        return subprocess.run([PYTHON, "-m", "composeflux", "--config", str(cfx.config_file), "status"],
                              capture_output=True, text=True, env=cfx.env)

    assert status().returncode == 1 and "No sync has completed yet" in status().stdout
    repo.add_stack(f"{prefix}-ok")
    repo.write(f"{prefix}-broken/compose.yaml", "services: [\n")
    commit = repo.commit("one good, one broken")
    cfx.sync(expect=1)
    shown = status()
    assert shown.returncode == 1
    assert "result: failed" in shown.stdout and commit[:12] in shown.stdout
    assert re.search(rf"deployed\s+{prefix}-ok\s+new", shown.stdout)
    assert re.search(rf"failed\s+{prefix}-broken\s+docker compose config failed", shown.stdout)
