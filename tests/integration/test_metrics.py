"""The metrics file read by the real node_exporter (Debian's prometheus-node-exporter, its textfile
collector alone), after real syncs against the real engine, and while it is rewritten.

node_exporter reads every *.prom file of its directory on each scrape and reports
node_textfile_scrape_error 1 for one it cannot parse: the file must be a complete document
whenever anyone reads it, which metrics.publish ensures by renaming a finished file into place.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from composeflux import metrics, state
from tests.conftest import free_port, service_yaml, wait_for_port

pytestmark = pytest.mark.docker

NODE_EXPORTER = Path("/usr/bin/prometheus-node-exporter")
QUICK = {"RETRY_FAILED_MAX": "0", "HEALTH_STABLE": "0", "HEALTH_TIMEOUT": "30"}

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'  # name="value", the value escaped: \\ \" \n
SAMPLE = re.compile(rf"^({NAME})(?:\{{((?:{LABEL},)*{LABEL},?)?\}})? (\S+)$")
PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
COMMENT = re.compile(rf"^# (?:HELP {NAME} .*|TYPE {NAME} (?:counter|gauge|histogram|summary|untyped))$")


def unescape(raw: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), raw)


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """A document in Prometheus's text format: (name, labels) -> value. AssertionError on any
    line that is neither a HELP/TYPE comment nor a sample, or on a document that does not end
    with a line end (a file read half-written)."""
    assert text.endswith("\n"), f"no line end at the end: {text[-80:]!r}"
    samples = {}
    for line in text[:-1].split("\n"):
        if COMMENT.match(line):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        labels = frozenset((key, unescape(raw)) for key, raw in PAIR.findall(match.group(2) or ""))
        try:
            samples[(match.group(1), labels)] = float(match.group(3))
        except ValueError:
            raise AssertionError(f"not a number: {line!r}") from None
    return samples


@dataclasses.dataclass
class NodeExporter:
    port: int
    directory: Path

    def scrape(self) -> dict[tuple[str, frozenset], float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=30) as response:
            return parse(response.read().decode())


@pytest.fixture
def node_exporter(tmp_path):
    assert NODE_EXPORTER.exists(), "prometheus-node-exporter is needed for the metrics tests (scripts/setup-host.sh installs it)"
    directory = tmp_path / "textfile"
    directory.mkdir()
    port = free_port()
    process = subprocess.Popen(
        [str(NODE_EXPORTER), "--collector.disable-defaults", "--collector.textfile",
         f"--collector.textfile.directory={directory}", f"--web.listen-address=127.0.0.1:{port}",
         "--web.disable-exporter-metrics", "--log.level=error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for_port(port, process, seconds=10)
        yield NodeExporter(port, directory)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        errors = process.stderr.read()
        process.stderr.close()
    assert "level=error" not in errors, errors  # it logs each textfile it could not read


def value(samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def series(samples, name: str) -> dict[frozenset, float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def ours(samples) -> dict:
    return {key: v for key, v in samples.items() if key[0].startswith("composeflux_")}


def stack_states(samples, stack: str) -> dict[str, float]:
    return {dict(labels)["state"]: v for labels, v in series(samples, "composeflux_stack_state").items() if dict(labels)["stack"] == stack}


def syncs(samples) -> dict[str, float]:
    return {dict(labels)["result"]: v for labels, v in series(samples, "composeflux_syncs_total").items()}


def test_node_exporter_reports_the_syncs(cfx, repo, prefix, node_exporter):
    bad, good = f"{prefix}-bad", f"{prefix}-good"
    path = node_exporter.directory / "composeflux.prom"
    cfx.settings(METRICS_TEXTFILE=str(path), **QUICK)
    repo.write(f"{bad}/compose.yaml", service_yaml() + "    cpus: not-a-number\n")  # Compose refuses to render it
    repo.add_stack(good)
    first = repo.commit("one broken stack")

    started = time.time()
    cfx.sync(expect=1)
    scraped = node_exporter.scrape()
    assert value(scraped, "node_textfile_scrape_error") == 0
    assert ours(scraped) == ours(parse(path.read_text()))  # node_exporter took every line of it
    assert value(scraped, "composeflux_last_sync_success") == 0
    assert value(scraped, "composeflux_last_sync_exit_status") == 1
    assert syncs(scraped) == {"ok": 0, "failed": 1, "error": 0}
    assert stack_states(scraped, bad) == {"deployed": 0, "unchanged": 0, "failed": 1, "rolled_back": 0, "suspended": 0}
    assert stack_states(scraped, good) == {"deployed": 1, "unchanged": 0, "failed": 0, "rolled_back": 0, "suspended": 0}
    assert value(scraped, "composeflux_stack_consecutive_failures", stack=bad) == 1
    assert value(scraped, "composeflux_stack_consecutive_failures", stack=good) == 0
    assert series(scraped, "composeflux_last_sync_commit_info") == {frozenset({"commit": first, "branch": "main"}.items()): 1}
    deployed = series(scraped, "composeflux_stack_last_deploy_timestamp_seconds")
    assert set(deployed) == {frozenset({("stack", good)})}  # the broken stack never ran
    good_deployed = deployed[frozenset({("stack", good)})]
    assert int(started) <= good_deployed <= time.time()
    assert value(scraped, "composeflux_stack_deploys_total", stack=good) == 1
    assert value(scraped, "composeflux_stack_failures_total", stack=bad) == 1

    cfx.sync(expect=1)
    scraped = node_exporter.scrape()
    assert value(scraped, "node_textfile_scrape_error") == 0
    assert syncs(scraped) == {"ok": 0, "failed": 2, "error": 0}
    assert value(scraped, "composeflux_stack_consecutive_failures", stack=bad) == 2
    assert stack_states(scraped, good)["unchanged"] == 1 and stack_states(scraped, good)["deployed"] == 0

    repo.add_stack(bad)
    fixed = repo.commit("fixed")
    cfx.sync()
    scraped = node_exporter.scrape()
    assert value(scraped, "node_textfile_scrape_error") == 0
    assert ours(scraped) == ours(parse(path.read_text()))
    assert value(scraped, "composeflux_last_sync_success") == 1
    assert value(scraped, "composeflux_last_sync_exit_status") == 0
    assert syncs(scraped) == {"ok": 1, "failed": 2, "error": 0}
    assert stack_states(scraped, bad) == {"deployed": 1, "unchanged": 0, "failed": 0, "rolled_back": 0, "suspended": 0}
    assert value(scraped, "composeflux_stack_consecutive_failures", stack=bad) == 0
    assert series(scraped, "composeflux_last_sync_commit_info") == {frozenset({"commit": fixed, "branch": "main"}.items()): 1}
    deployed = series(scraped, "composeflux_stack_last_deploy_timestamp_seconds")
    assert deployed[frozenset({("stack", good)})] == good_deployed  # not redeployed
    assert good_deployed <= deployed[frozenset({("stack", bad)})] <= time.time()

    # A sync that fails as a whole (the remote is gone) counts as an error; the stacks keep their state.
    repo.remote.rename(repo.remote.with_name("moved.git"))
    cfx.sync(expect=4)
    scraped = node_exporter.scrape()
    assert value(scraped, "node_textfile_scrape_error") == 0
    assert value(scraped, "composeflux_last_sync_success") == 0
    assert value(scraped, "composeflux_last_sync_exit_status") == 4
    assert syncs(scraped) == {"ok": 1, "failed": 2, "error": 1}
    assert stack_states(scraped, bad)["deployed"] == 1
    assert [p.name for p in node_exporter.directory.iterdir()] == ["composeflux.prom"]  # no temporary file left


def sample_state(size: int, generation: int) -> state.State:
    """A state with `size` stacks (so the file grows and shrinks), all of whose values change with `generation`."""
    now = state.now()
    stacks = {
        f"stack-{index:03d}": state.StackRecord(
            last_action=("deploy", "unchanged", "failed", "rollback", "suspended", "keep", "skipped")[(index + generation) % 7],
            deployed=state.Revision(f"{generation:040x}", "h" * 64, now),
            consecutive_failures=generation % 7, deploys=generation, failures=index, rollbacks=generation % 3,
        )
        for index in range(size)
    }
    last = state.LastSync(now, ("ok", "failed", "error")[generation % 3], generation % 3, "summary", commit=f"{generation:040x}",
                          branch='ma"in\\', duration=generation / 7)
    return state.State(last_sync=last, stacks=stacks, counters={"syncs_ok": generation, "syncs_failed": 2 * generation})


def test_the_file_is_never_seen_half_written(node_exporter):
    path = node_exporter.directory / "composeflux.prom"
    states = [sample_state(size, generation) for generation, size in enumerate([0, 150, 3, 80, 1, 200, 20] * 43)]
    documents = {metrics.render(s) for s in states}
    metrics.publish(path, states[0])

    done = threading.Event()
    progress = threading.Condition()
    reads: list[int] = [0]
    scrapes: list[int] = [0]
    problems: list[str] = []

    def read_loop():
        while not done.is_set():
            text = path.read_text()
            try:
                parse(text)
                assert text in documents, "not one of the documents written"
            except AssertionError as exc:
                problems.append(f"read: {exc}")
            with progress:
                reads[0] += 1
                progress.notify_all()

    def scrape_loop():
        while not done.is_set():
            try:
                scraped = node_exporter.scrape()
                if value(scraped, "node_textfile_scrape_error") != 0:
                    problems.append(f"node_exporter: node_textfile_scrape_error {value(scraped, 'node_textfile_scrape_error')}")
            except (AssertionError, OSError) as exc:
                problems.append(f"scrape: {exc}")
            with progress:
                scrapes[0] += 1
                progress.notify_all()

    threads = [threading.Thread(target=read_loop, daemon=True), threading.Thread(target=scrape_loop, daemon=True)]
    for thread in threads:
        thread.start()
    try:
        for number, saved in enumerate(states):
            metrics.publish(path, saved)
            if number % 10 == 0:
                # Both readers are really at it while the file is being replaced.
                seen = (reads[0], scrapes[0])
                with progress:
                    assert progress.wait_for(lambda seen=seen: reads[0] > seen[0] and scrapes[0] > seen[1], timeout=60)
    finally:
        done.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not problems, problems[:5]
    assert reads[0] >= len(states) // 10 and scrapes[0] >= len(states) // 10
    assert path.read_text() == metrics.render(states[-1])
    assert [p.name for p in node_exporter.directory.iterdir()] == ["composeflux.prom"]
    final = node_exporter.scrape()
    assert value(final, "node_textfile_scrape_error") == 0
    assert ours(final) == ours(parse(metrics.render(states[-1])))
