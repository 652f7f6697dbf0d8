"""Failure backoff: a stack that failed with the same inputs is not retried on every run."""

from __future__ import annotations

import json

from composeflux import state
from composeflux.errors import ExitStatus
from tests.conftest import service_yaml


def age_backoff(cfx, name: str) -> None:
    """Pretend the stack's backoff has passed."""
    path = cfx.state_dir / state.STATE_FILE
    document = json.loads(path.read_text())
    document["stacks"][name]["retry_after"] = "2000-01-01T00:00:00+00:00"
    path.write_text(json.dumps(document))


def test_a_failed_deploy_waits_out_its_backoff_and_still_counts_as_failed(cfx, repo, capsys):
    repo.add_stack("web")
    repo.add_stack("ok")
    repo.commit()
    cfx.compose.fail_up["web"] = "Error response from daemon: pull access denied for nosuch/image"
    assert cfx() is ExitStatus.STACKS_FAILED
    record = cfx.state().stacks["web"]
    assert record.consecutive_failures == 1 and record.failed_inputs.startswith("deploy:") and record.retry_after

    cfx.compose.calls.clear()
    assert cfx() is ExitStatus.STACKS_FAILED
    assert cfx.compose.called("up") == []  # not tried again: same inputs
    last = cfx.state().last_sync
    assert last.stacks["web"]["action"] == "failed" and "(web)" in last.summary
    assert "pull access denied" in last.stacks["web"]["error"] and "--retry-failed" in last.stacks["web"]["error"]
    assert cfx.state().stacks["web"].consecutive_failures == 1  # a run that did not try adds nothing
    assert "web: Not retried yet:" in capsys.readouterr().err

    assert cfx(retry_failed=True) is ExitStatus.STACKS_FAILED
    assert cfx.compose.called("up") == ["web"]
    assert cfx.state().stacks["web"].consecutive_failures == 2

    age_backoff(cfx, "web")
    del cfx.compose.fail_up["web"]
    assert cfx() is ExitStatus.OK
    assert cfx.compose.called("up") == ["web", "web"]
    record = cfx.state().stacks["web"]
    assert (record.consecutive_failures, record.failed_inputs, record.retry_after) == (0, None, None)


def test_changed_inputs_are_tried_at_once(cfx, repo):
    repo.add_stack("web")
    repo.commit()
    cfx.compose.fail_up["web"] = "boom"
    cfx()
    repo.add_stack("web", environment={"FIXED": "yes"})
    repo.commit()
    del cfx.compose.fail_up["web"]
    cfx.compose.calls.clear()
    assert cfx() is ExitStatus.OK
    assert cfx.compose.called("up") == ["web"]


def test_the_wait_doubles_up_to_retry_failed_max_and_zero_turns_it_off(cfx, repo):
    repo.add_stack("web")
    repo.commit()
    cfx.compose.fail_up["web"] = "boom"
    waits = []
    for _ in range(6):
        cfx(retry_failed=True, RETRY_FAILED_MAX="1800")
        record = cfx.state().stacks["web"]
        started = cfx.state().last_sync.time
        waits.append(round((state.datetime.datetime.fromisoformat(record.retry_after)
                            - state.datetime.datetime.fromisoformat(started)).total_seconds() / 60))
    assert waits == [5, 10, 20, 30, 30, 30]
    cfx.compose.calls.clear()
    cfx(RETRY_FAILED_MAX="0")
    cfx(RETRY_FAILED_MAX="0")
    assert cfx.compose.called("up") == ["web", "web"]


def test_a_stack_that_failed_to_render_is_not_rendered_again_until_its_files_change(cfx, repo):
    repo.write("broken/compose.yaml", "services: [\n")
    repo.add_stack("ok")
    repo.commit()
    assert cfx() is ExitStatus.STACKS_FAILED
    cfx.compose.calls.clear()
    assert cfx() is ExitStatus.STACKS_FAILED
    assert cfx.compose.called("config") == []
    assert "yaml" in cfx.state().last_sync.stacks["broken"]["error"]
    repo.write("broken/compose.yaml", service_yaml())
    repo.commit()
    assert cfx() is ExitStatus.OK
    assert cfx.compose.called("config") == ["broken"] and cfx.compose.called("up") == ["broken"]
