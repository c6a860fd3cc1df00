"""Fixtures of the deployment tests: the compose files and the Dockerfiles, parsed.

Dockerfiles are parsed with `dockerfile` (BuildKit's own Go parser); compose files with PyYAML.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dockerfile
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Stage:
    name: str
    base: str
    commands: list[dockerfile.Command] = field(default_factory=list)


class DockerImage:
    """A multi-stage Dockerfile as a build with the given DEVICE build argument sees it."""

    def __init__(self, path: Path, device: str = "cpu") -> None:
        self.path = path
        self.args: dict[str, str] = {}  # global ARGs (before the first FROM) and their defaults
        self.stages: dict[str, Stage] = {}
        current: Stage | None = None
        for command in dockerfile.parse_file(str(path)):
            if command.cmd == "FROM":
                name = command.value[2] if len(command.value) == 3 else str(len(self.stages))
                current = self.stages[name] = Stage(name, command.value[0])
            elif current is None and command.cmd == "ARG":
                name, _, default = command.value[0].partition("=")
                self.args[name] = default
            else:
                assert current is not None, f"{path}: {command.original} before any FROM"
                current.commands.append(command)
        self.arg_defaults = dict(self.args)
        self.args["DEVICE"] = device

    def substitute(self, text: str) -> str:
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: self.args[m[1] or m[2]], text)

    @property
    def chain(self) -> list[Stage]:
        """The final stage and the stages it is built FROM, root first."""
        stage = list(self.stages.values())[-1]
        chain = [stage]
        while self.substitute(stage.base) in self.stages:
            stage = self.stages[self.substitute(stage.base)]
            chain.insert(0, stage)
        return chain

    @property
    def base_image(self) -> str:
        return self.substitute(self.chain[0].base)

    def instructions(self, cmd: str) -> list[dockerfile.Command]:
        return [c for stage in self.chain for c in stage.commands if c.cmd == cmd]

    def last(self, cmd: str) -> dockerfile.Command:
        found = self.instructions(cmd)
        assert found, f"{self.path.name}: no {cmd} in the final image"
        return found[-1]

    @property
    def env(self) -> dict[str, str]:
        """ENV of the final image, values unexpanded."""
        env: dict[str, str] = {}
        for command in self.instructions("ENV"):
            env.update(zip(command.value[::2], command.value[1::2]))
        return env


def merge_compose(base: dict, override: dict) -> dict:
    """Compose's merge of an override file, for mappings (the only kind our override uses)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_compose(merged[key], value)
        else:
            merged[key] = value
    return merged


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


@pytest.fixture(scope="session")
def gpu_override() -> dict:
    return yaml.safe_load((REPO / "docker-compose.gpu.yml").read_text())


@pytest.fixture(scope="session")
def gpu_compose(compose: dict, gpu_override: dict) -> dict:
    """docker-compose.yml with docker-compose.gpu.yml applied, as `docker compose -f a -f b`."""
    return merge_compose(compose, gpu_override)


@pytest.fixture(scope="session")
def docker_image() -> Callable[[str, str], DockerImage]:
    """`docker_image("service", "cuda")`: docker/service.Dockerfile built with DEVICE=cuda."""
    return lambda name, device="cpu": DockerImage(REPO / "docker" / f"{name}.Dockerfile", device)


@pytest.fixture(scope="session")
def service_image(docker_image: Callable[[str, str], DockerImage]) -> DockerImage:
    return docker_image("service", "cpu")


@pytest.fixture(scope="session")
def offline_image(docker_image: Callable[[str, str], DockerImage]) -> DockerImage:
    return docker_image("offline", "cpu")
