"""What a stack may read, and what Git content composeflux refuses to deploy silently wrong:
files outside the repository, tracked symlinks, submodules, Git LFS pointers."""

from __future__ import annotations

import os

from composeflux.errors import ExitStatus
from tests.conftest import service_yaml


def test_an_env_file_outside_the_repository_fails_its_stack_without_naming_it(cfx, repo, capsys):
    repo.write("leaky/compose.yaml", service_yaml() + "    env_file: [/etc/hostname]\n")
    repo.add_stack("fine")
    repo.commit()
    assert cfx() is ExitStatus.STACKS_FAILED
    assert cfx.compose.called("config") == ["fine"]  # Compose never read it
    err = capsys.readouterr().err
    assert "lies outside the repository" in err and "/etc/hostname" not in err
    assert cfx.compose.called("up") == ["fine"]


def test_an_include_through_a_symlink_out_of_the_checkout_fails_its_stack(cfx, repo, tmp_path):
    outside = tmp_path / "outside.yaml"
    outside.write_text(service_yaml())
    repo.write("sneaky/compose.yaml", "include: [./more.yaml]\n")
    os.symlink(outside, repo.work / "stacks" / "sneaky" / "more.yaml")
    repo.commit()
    assert cfx() is ExitStatus.STACKS_FAILED
    assert "lies outside the repository" in cfx.state().stacks["sneaky"].last_error


def test_a_stack_yml_that_links_out_of_the_repository_is_a_configuration_error(cfx, repo, tmp_path):
    (tmp_path / "elsewhere.yml").write_text("envs: {A: b}\n")
    repo.add_stack("web")
    os.symlink(tmp_path / "elsewhere.yml", repo.work / "stacks" / "stack.yml")
    repo.commit()
    assert cfx() is ExitStatus.CONFIG
    assert cfx.compose.called("up") == []


def test_a_file_behind_a_tracked_symlink_is_hashed_and_deployed_by_its_content(cfx, repo):
    repo.write("../shared/conf/app.conf", "version 1\n")
    repo.write("web/compose.yaml", service_yaml() + "    volumes:\n      - ./conf/app.conf:/app.conf:ro\n")
    os.symlink("../../shared/conf", repo.work / "stacks" / "web" / "conf")
    repo.commit()
    assert cfx() is ExitStatus.OK
    tree = cfx.state_dir / "stacks" / "web"
    assert (tree / "stacks" / "web" / "conf" / "app.conf").read_text() == "version 1\n"  # the link resolves in the tree

    repo.write("../shared/conf/app.conf", "version 2\n")  # only the target changes
    repo.commit()
    cfx.compose.calls.clear()
    assert cfx() is ExitStatus.OK
    assert cfx.compose.called("up") == ["web"]
    assert (tree / "shared" / "conf" / "app.conf").read_text() == "version 2\n"


def test_a_stack_turned_into_a_submodule_fails_instead_of_being_pruned(cfx, repo):
    repo.add_stack("keep")
    repo.add_stack("vendored")
    repo.commit()
    assert cfx() is ExitStatus.OK
    repo.remove("vendored")
    (repo.work / "stacks" / "vendored").mkdir()
    repo.git("add", "-A")
    commit = repo.git("rev-parse", "HEAD")
    repo.git("update-index", "--add", "--cacheinfo", f"160000,{commit},stacks/vendored")
    repo.git("commit", "-q", "-m", "vendored is a submodule now")
    repo.git("push", "-q", "origin", "HEAD:main")
    assert cfx() is ExitStatus.STACKS_FAILED
    assert cfx.compose.called("down") == []
    assert "is a Git submodule" in cfx.state().stacks["vendored"].last_error


def test_a_git_lfs_pointer_fails_its_stack(cfx, repo):
    pointer = "version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 12\n"
    repo.write("big/compose.yaml", pointer)
    repo.write("model/compose.yaml", service_yaml() + "    volumes:\n      - ./weights.bin:/weights.bin:ro\n")
    repo.write("model/weights.bin", pointer)
    repo.commit()
    assert cfx() is ExitStatus.STACKS_FAILED
    stacks = cfx.state().stacks
    assert "compose.yaml is a Git LFS pointer" in stacks["big"].last_error
    assert "weights.bin: a Git LFS pointer" in stacks["model"].last_error
    assert cfx.compose.called("up") == []
