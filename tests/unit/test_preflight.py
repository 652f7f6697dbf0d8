"""The checks before `up`: pure functions over the rendered project and the engine's facts."""

from __future__ import annotations

from composeflux.errors import ExitStatus
from composeflux.preflight import EngineFacts, Provided, check
from tests.conftest import service_yaml


def project(**services):
    return {"name": "web", "services": services, "networks": {"default": {"name": "web_default"}}}


def test_external_networks_and_volumes_must_exist_or_come_from_an_earlier_stack():
    using = {
        "services": {"app": {"image": "x"}},
        "networks": {"proxy": {"name": "proxy", "external": True}},
        "volumes": {"media": {"name": "media", "external": True}},
    }
    assert check("web", using, EngineFacts(), Provided()) == [
        "external network proxy does not exist (and no stack deployed before this one creates it)",
        "external volume media does not exist (and no stack deployed before this one creates it)",
    ]
    assert check("web", using, EngineFacts(networks=frozenset({"proxy"}), volumes=frozenset({"media"})), Provided()) == []
    provided = Provided()
    creator = {"services": {"traefik": {"image": "x"}}, "networks": {"proxy": {"name": "proxy"}}, "volumes": {"media": {"name": "media"}}}
    assert check("edge", creator, EngineFacts(), provided) == []
    assert check("web", using, EngineFacts(), provided) == []


def test_container_names_and_host_ports_must_be_free():
    facts = EngineFacts(container_names={"db": "other"}, ports={("0.0.0.0", 8080, "tcp"): "other", ("127.0.0.1", 53, "udp"): "dns"})
    taken = project(app={"image": "x", "container_name": "db", "ports": [{"target": 80, "published": "8080", "protocol": "tcp"}]})
    assert check("web", taken, facts, Provided()) == [
        "container_name db of service app is taken by the project other",
        "host port 8080/tcp of service app is published by the project other",
    ]
    own = project(app={"image": "x", "container_name": "db", "ports": [{"target": 80, "published": "8080"}]})
    assert check("other", own, facts, Provided()) == []  # its own, from its last deployment
    other_protocol = project(app={"image": "x", "ports": [{"target": 53, "published": "53", "protocol": "tcp", "host_ip": "127.0.0.1"}]})
    assert check("web", other_protocol, facts, Provided()) == []
    provided = Provided()
    first = project(app={"image": "x", "ports": [{"target": 80, "published": "9000", "host_ip": "127.0.0.1"}]})
    assert check("one", first, EngineFacts(), provided) == []
    assert check("two", first, EngineFacts(), provided) == ["host port 9000/tcp of service app is published by the project one"]


def test_an_image_that_may_not_be_pulled_must_be_here_and_swarm_secrets_are_named():
    never = project(app={"image": "local/thing", "pull_policy": "never"})
    assert check("web", never, EngineFacts(), Provided()) == [
        "image local/thing of service app is not on this host, and its pull_policy is never"
    ]
    assert check("web", never, EngineFacts(images=frozenset({"local/thing:latest"})), Provided()) == []
    swarm = {**project(app={"image": "x"}), "secrets": {"token": {"external": True, "name": "token"}}}
    assert check("web", swarm, EngineFacts(), Provided()) == ["external secrets are a Docker Swarm feature: Compose cannot deploy them"]


def test_a_dry_run_predicts_what_up_would_refuse(cfx, repo):
    repo.write("web/compose.yaml", service_yaml() + "    networks: [proxy]\nnetworks:\n  proxy:\n    name: proxy\n    external: true\n")
    repo.add_stack("fine")
    repo.commit()
    assert cfx(dry_run=True) is ExitStatus.STACKS_FAILED
    assert "failed     web" in cfx.out and "cannot come up: external network proxy does not exist" in cfx.out
    assert cfx() is ExitStatus.STACKS_FAILED
    assert cfx.compose.called("up") == ["fine"]
    assert "external network proxy does not exist" in cfx.state().stacks["web"].last_error
    cfx.compose.extra_networks.add("proxy")
    assert cfx() is ExitStatus.OK  # not held back: it depends on the engine, not on its inputs
