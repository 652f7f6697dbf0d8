"""BACKEND=swarm on a real multi-node Docker Swarm: three Debian 13 systems booted with systemd
in containers, each with its own Docker engine and the .deb from this checkout (cluster.py).

node1 is the manager, node2 and node3 workers; the leader test promotes both, so that a swarm of
three managers survives the loss of one. composeflux runs on the managers from the
packaged command as the service's user (the leader test through the packaged unit, hardening
and all), against a repository on the host.

What this sandbox cannot carry: its kernel has no IPVS, which Swarm's service VIPs and the
ingress routing mesh need, so no test sends traffic between services or through a published
port. The tests check what composeflux decides and Swarm does with it: scheduling over the
nodes, convergence, updates, rotation, rollback, removal and who syncs.

The tests in this module run in order and share one swarm.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.swarm.cluster import TEST_IMAGE

pytestmark = [pytest.mark.e2e]

STACK = "web"
SECRETS_FILE = "/etc/composeflux/secrets.env"
SETTINGS = {
    "SECRETS_PROVIDER": "file",
    "SECRETS_FILE": SECRETS_FILE,
    "HEALTH_TIMEOUT": "120",
    "HEALTH_STABLE": "2",
    "RETRY_FAILED_MAX": "0",
}
FIRST_TOKEN = "first-token-7c1d0a"
SECOND_TOKEN = "second-token-94be21"


def compose(worker_command: str = "3600", healthcheck: str = "") -> str:
    text = textwrap.dedent(f"""\
        services:
          app:
            image: {TEST_IMAGE}
            command: ["sleep", "3600"]
            init: true
            stop_grace_period: 1s
            configs: [{{source: app_conf, target: /etc/app.conf}}]
            secrets: [{{source: api_token, target: api_token}}]
            @HEALTHCHECK@
            deploy:
              replicas: 2
              placement: {{max_replicas_per_node: 1}}
              update_config: {{monitor: 5s}}
          worker:
            image: {TEST_IMAGE}
            command: ["sleep", "{worker_command}"]
            init: true
            stop_grace_period: 1s
            container_name: web-worker
        configs:
          app_conf: {{file: ./app.conf}}
        secrets:
          api_token: {{environment: API_TOKEN}}
        """)
    return text.replace("    @HEALTHCHECK@\n", healthcheck)


# A healthcheck that fails at once: Swarm kills the task, the update fails within its monitor
# window, and failure_action (rollback, composeflux's default with ROLLBACK=true) puts back the
# previous version.
FAILING = "    healthcheck: {test: [\"CMD-SHELL\", \"exit 1\"], interval: 1s, timeout: 1s, retries: 1, start_period: 0s}\n"


def sync(node, *args):
    result = node.sync(*args)
    return result.returncode, result.stdout + result.stderr


def service(cluster, name):
    found = [s for s in cluster.services(STACK) if s["Spec"]["Name"] == f"{STACK}_{name}"]
    assert found, f"no service {STACK}_{name}"
    return found[0]


def running_ids(cluster, name):
    return sorted(task["ID"] for task in cluster.running_tasks(f"{STACK}_{name}"))


def read_in_task(cluster, name, path):
    """A file in one running task's container, read on the node that runs it."""
    task = cluster.running_tasks(f"{STACK}_{name}")[0]
    node = cluster.node(task["NodeHostname"])
    container = task["Status"]["ContainerStatus"]["ContainerID"]
    return node.out(f"docker exec {container} cat {path}")


def objects(cluster, kind):
    """Names of this stack's configs or secrets that composeflux created."""
    listed = cluster.control().docker(kind[:-1], "ls", "--filter", f"label=com.docker.stack.namespace={STACK}",
                                      "--filter", "label=compose.stack.managed-by=composeflux", "--format", "{{.Name}}")
    return sorted(listed.stdout.split())


def used(cluster, kind):
    """The config or secret names the app service's spec uses now."""
    field = {"configs": ("Configs", "ConfigName"), "secrets": ("Secrets", "SecretName")}[kind]
    return [ref[field[1]] for ref in service(cluster, "app")["Spec"]["TaskTemplate"]["ContainerSpec"].get(field[0]) or []]


@pytest.fixture(scope="module")
def swarm(cluster):
    cluster.manager.write_config(SETTINGS)
    cluster.manager.sh(f"install -m 0600 -o composeflux /dev/stdin {SECRETS_FILE}", input=f"API_TOKEN={FIRST_TOKEN}\n")
    cluster.repo.write(f"stacks/{STACK}/compose.yaml", compose())
    cluster.repo.write(f"stacks/{STACK}/app.conf", "listen 8080\n")
    cluster.repo.commit_and_push("web: app and worker")
    return cluster


def test_the_plan_names_what_swarm_ignores_and_changes_nothing(swarm):
    status, output = sync(swarm.manager, "--dry-run")
    assert status == 0, output
    line = next(line for line in output.splitlines() if line.startswith("deploy ") and f" {STACK} " in line)
    assert "Swarm ignores services.worker.container_name" in line
    assert swarm.services(STACK) == []
    assert swarm.control().docker("config", "ls", "-q").stdout.split() == []  # not even the hash key


def test_first_deploy_spreads_the_replicas_over_two_nodes(swarm):
    status, output = sync(swarm.manager)
    assert status == 0, output
    assert "1 deployed, 0 unchanged, 0 pruned, 0 failed" in output
    nodes = [task["NodeHostname"] for task in swarm.running_tasks(f"{STACK}_app")]
    assert len(nodes) == 2 and len(set(nodes)) == 2, nodes  # replicas 2, at most one per node
    app = service(swarm, "app")
    labels = app["Spec"]["Labels"]
    assert labels["compose.stack.managed-by"] == "composeflux" and len(labels["compose.stack.service-hash"]) == 64
    assert "ContainerName" not in json.dumps(app["Spec"])
    # The config from Git and the secret from the secrets provider reach the tasks
    assert read_in_task(swarm, "app", "/etc/app.conf") == "listen 8080"
    assert read_in_task(swarm, "app", "/run/secrets/api_token") == FIRST_TOKEN
    # ... under names that tell nothing of the value, with this instance's labels
    assert [name.rsplit("-", 1)[0] for name in objects(swarm, "secrets")] == [f"{STACK}_api_token"]
    assert FIRST_TOKEN not in output and FIRST_TOKEN not in " ".join(objects(swarm, "secrets"))
    network = swarm.control().docker("network", "inspect", f"{STACK}_default", "--format", "{{json .Labels}}").stdout
    assert json.loads(network)["compose.stack.managed-by"] == "composeflux"


def test_a_no_op_sync_changes_nothing(swarm):
    before = {s["Spec"]["Name"]: s["Version"]["Index"] for s in swarm.services(STACK)}
    tasks = running_ids(swarm, "app")
    status, output = sync(swarm.manager)
    assert status == 0, output
    assert "0 deployed, 1 unchanged, 0 pruned, 0 failed" in output
    assert {s["Spec"]["Name"]: s["Version"]["Index"] for s in swarm.services(STACK)} == before
    assert running_ids(swarm, "app") == tasks


def test_changing_one_service_updates_only_it(swarm):
    app_spec, app_tasks = service(swarm, "app")["Spec"], running_ids(swarm, "app")
    worker_tasks = running_ids(swarm, "worker")
    swarm.repo.write(f"stacks/{STACK}/compose.yaml", compose(worker_command="3601"))
    swarm.repo.commit_and_push("worker: another command")
    status, output = sync(swarm.manager)
    assert status == 0, output
    assert "hash changed (services: worker)" in output
    assert running_ids(swarm, "worker") != worker_tasks
    assert service(swarm, "worker")["Spec"]["TaskTemplate"]["ContainerSpec"]["Args"] == ["sleep", "3601"]
    assert running_ids(swarm, "app") == app_tasks  # not restarted
    assert service(swarm, "app")["Spec"] == app_spec  # the very same specification


def test_a_changed_config_file_rotates_the_config(swarm):
    first = used(swarm, "configs")
    swarm.repo.write(f"stacks/{STACK}/app.conf", "listen 9090\n")
    swarm.repo.commit_and_push("app.conf: another port")
    status, output = sync(swarm.manager)
    assert status == 0, output
    now = used(swarm, "configs")
    assert now != first and now[0].startswith(f"{STACK}_app_conf-")
    assert read_in_task(swarm, "app", "/etc/app.conf") == "listen 9090"
    # The old version is what a rollback of the service goes back to: kept until it is not that either
    assert sorted(objects(swarm, "configs")) == sorted(first + now)


def test_a_changed_secret_value_rotates_the_secret_and_removes_unused_versions(swarm):
    configs_before = used(swarm, "configs")
    old_config = sorted(set(objects(swarm, "configs")) - set(configs_before))
    first = used(swarm, "secrets")
    swarm.manager.sh(f"cat > {SECRETS_FILE}", input=f"API_TOKEN={SECOND_TOKEN}\n")
    status, output = sync(swarm.manager)
    assert status == 0, output
    assert "hash changed (services: app)" in output
    now = used(swarm, "secrets")
    assert now != first
    assert read_in_task(swarm, "app", "/run/secrets/api_token") == SECOND_TOKEN
    assert SECOND_TOKEN not in output and FIRST_TOKEN not in output
    assert sorted(objects(swarm, "secrets")) == sorted(first + now)  # the previous one: the rollback's
    # The config two versions back is used by nothing now (not even a rollback): removed
    assert old_config and not set(old_config) & set(objects(swarm, "configs"))


def test_an_unhealthy_update_is_rolled_back_by_swarm_and_reported(swarm):
    before = service(swarm, "app")["Spec"]
    swarm.repo.write(f"stacks/{STACK}/compose.yaml", compose(worker_command="3601", healthcheck=FAILING))
    swarm.repo.commit_and_push("app: a healthcheck that fails")
    status, output = sync(swarm.manager)
    assert status == 1, output
    assert "rolled back by Swarm (services: app)" in output
    assert "1 rolled back (web)" in output
    app = service(swarm, "app")
    assert app["UpdateStatus"]["State"] == "rollback_completed"
    assert "Healthcheck" not in app["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert app["Spec"]["Labels"] == before["Labels"]
    status_out = swarm.manager.sh(f"composeflux status {STACK}", check=False).stdout
    assert "rolled back by Swarm" in status_out
    # The rejected revision is not tried again while Git wants it
    status, output = sync(swarm.manager)
    assert status == 1 and "waiting for a new revision" in output, output
    assert service(swarm, "app")["Version"]["Index"] == app["Version"]["Index"]
    # A fixed revision deploys
    swarm.repo.write(f"stacks/{STACK}/compose.yaml", compose(worker_command="3601"))
    swarm.repo.commit_and_push("app: no failing healthcheck")
    status, output = sync(swarm.manager)
    assert status == 0, output


def test_a_stack_deployed_by_hand_is_not_taken_over(swarm):
    by_hand = f"services:\n  x:\n    image: {TEST_IMAGE}\n    command: [\"sleep\", \"3600\"]\n"
    swarm.control().sh("docker stack deploy --detach=true -c - manual", input=by_hand)
    swarm.repo.write("stacks/manual/compose.yaml", by_hand)
    swarm.repo.commit_and_push("manual: in Git too")
    try:
        status, output = sync(swarm.manager)
        assert status == 1, output
        assert "'manual' already exists, not deployed by composeflux" in output
        labels = swarm.services("manual")[0]["Spec"]["Labels"]
        assert "compose.stack.managed-by" not in labels
    finally:
        swarm.repo.remove("stacks/manual")
        swarm.repo.commit_and_push("manual: out of Git")
        swarm.control().docker("stack", "rm", "manual", check=False)
        swarm.wait_until(lambda: swarm.services("manual") == [], 60, "the hand-made stack to go")


def test_a_stack_deleted_from_git_is_removed(swarm):
    swarm.repo.write("stacks/keep/compose.yaml", f"services:\n  k:\n    image: {TEST_IMAGE}\n    command: [\"sleep\", \"3600\"]\n")
    swarm.repo.remove(f"stacks/{STACK}")
    swarm.repo.commit_and_push("web: gone; keep: new")
    status, output = sync(swarm.manager)
    assert status == 0, output
    assert "1 deployed, 0 unchanged, 1 pruned, 0 failed" in output
    assert swarm.services(STACK) == []
    assert objects(swarm, "configs") == [] and objects(swarm, "secrets") == []
    names = swarm.control().docker("config", "ls", "--format", "{{.Name}}").stdout.split()
    assert f"{STACK}_composeflux-claim" not in names and "keep_composeflux-claim" in names


def test_only_the_leader_syncs_and_another_manager_takes_over(swarm):
    node1, node2, node3 = swarm.nodes
    swarm.promote(node2)
    swarm.promote(node3)
    for node in (node2, node3):
        node.write_config(SETTINGS)
        node.sh(f"install -m 0600 -o composeflux /dev/stdin {SECRETS_FILE}", input=f"API_TOKEN={SECOND_TOKEN}\n")
    assert swarm.leader() is node1
    status, output = sync(node2)
    assert status == 0 and "Not the leader of the swarm (the leader is node1)" in output, output
    assert node2.sh("test -e /var/lib/composeflux/state.json", check=False).returncode != 0

    node1.stop_engine()
    try:
        new = swarm.wait_until(lambda: next((n for n in (node2, node3) if _is_leader(n)), None), 120, "a new leader")
        other = node3 if new is node2 else node2
        swarm.repo.write("stacks/after/compose.yaml", f"services:\n  a:\n    image: {TEST_IMAGE}\n    command: [\"sleep\", \"3600\"]\n")
        swarm.repo.commit_and_push("after: deployed by the new leader")
        # Through the packaged unit, as the timer runs it on every manager
        result, logged = other.unit_sync("Not the leader of the swarm")
        assert result == "done" and "Not the leader of the swarm" in logged, logged
        result, logged = new.unit_sync("1 deployed, 1 unchanged, 0 pruned, 0 failed")
        assert result == "done", logged
        # The swarm kept the instance's hash key: what node1 deployed is unchanged for the new leader
        assert "1 deployed, 1 unchanged, 0 pruned, 0 failed" in logged
        assert swarm.services("after") and all(s["Spec"]["Labels"]["compose.stack.managed-by"] == "composeflux"
                                               for s in swarm.services("after"))
    finally:
        node1.start_engine()


def _is_leader(node) -> bool:
    result = node.sh("timeout 10 docker node inspect self --format '{{.ManagerStatus.Leader}}'", check=False)
    return result.stdout.strip() == "true"
