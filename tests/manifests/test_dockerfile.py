"""The Dockerfile against the manifests, since no image can be built here: the base pinned to a patch
release of the Python the project requires, a builder stage for the wheel and a final stage without
it, the uid the pods run as, the ports they declare, an entrypoint and commands kgm understands, a
build context without the virtualenv, .git or tests; and the image the manifests run is named by one
kustomize ``images:`` entry, which a user's ``kustomize edit set image`` replaces everywhere."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from kgm.cli import _parser as kgm_parser
from tests.manifests.overlay import render_overlay
from tests.manifests.rendering import (
    MANIFESTS,
    Obj,
    key,
    render,
)
from tests.support.data import REPO

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
IMAGE_NAME = "ghcr.io/kgm/k8s-gpu-management"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


# ------------------------------------------------------------------------------- reading the files


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [text for name, text in self.instructions if name == instruction]


def _logical_lines(text: str) -> list[str]:
    """Instructions one per line: comments dropped (also inside a continuation, as Docker does),
    backslash continuations joined."""
    lines, current = [], ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#"):
            continue
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        current += raw
        if current.strip():
            lines.append(current.strip())
        current = ""
    return lines


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(the ARGs before the first FROM with their defaults, the stages with ARGs substituted in FROM)."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(text):
        instruction, _, rest = line.partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction == "ARG" and not stages:
            name, _, default = rest.partition("=")
            global_args[name] = default
        elif instruction == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], words[0])
            stage_name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=stage_name))
        else:
            stages[-1].instructions.append((instruction, rest))
    return global_args, stages


GLOBAL_ARGS, STAGES = parse_dockerfile(DOCKERFILE.read_text())
FINAL = STAGES[-1]


def exec_form(stage: Stage, instruction: str) -> list[str]:
    (text,) = stage.all(instruction)
    value = json.loads(text)
    assert isinstance(value, list), f"{instruction} must be in exec form (a JSON array): {text}"
    return value


@dataclass(frozen=True)
class KgmPod:
    """A pod template running kgm's image: its workload, its spec and the containers of that image."""

    workload: Obj
    spec: Obj
    containers: list[Obj]

    @property
    def where(self) -> tuple[str, str, str]:
        return key(self.workload)


def _pod_specs(node: object) -> Iterator[Obj]:
    """Every pod spec inside an object (a Deployment's template, a CronJob's job template, ...)."""
    if isinstance(node, dict):
        if isinstance(node.get("containers"), list):
            yield node
        for value in node.values():
            yield from _pod_specs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _pod_specs(item)


def kgm_pods(objs: list[Obj]) -> list[KgmPod]:
    """Each pod template with a container of kgm's image, in any kind of workload."""
    found = []
    for obj in objs:
        for spec in _pod_specs(obj.get("spec")):
            all_containers = [*spec.get("initContainers", []), *spec["containers"]]
            ours = [c for c in all_containers if c["image"].split(":")[0] == IMAGE_NAME]
            if ours:
                found.append(KgmPod(obj, spec, ours))
    return found


#: manifests/ and each overlay: every install that runs kgm.
INSTALLS = [MANIFESTS, *sorted(path.parent for path in MANIFESTS.glob("overlays/*/kustomization.yaml"))]


def _install_id(path: Path) -> str:
    return str(path.relative_to(REPO))


def kgm_images_entries() -> list[tuple[Path, Obj]]:
    """Every kustomize ``images:`` entry under manifests/ that names kgm's image."""
    entries = []
    for path in sorted(MANIFESTS.rglob("kustomization.yaml")):
        for entry in yaml.safe_load(path.read_text()).get("images") or []:
            if entry["name"] == IMAGE_NAME:
                entries.append((path, entry))
    return entries


# ------------------------------------------------------------------------------- the Dockerfile


def test_the_base_is_a_slim_python_pinned_to_a_patch_release_of_the_required_python() -> None:
    required = re.fullmatch(r">=(\d+\.\d+)", PROJECT["requires-python"])
    assert required is not None
    for stage in STAGES:
        match = re.fullmatch(r"python:(\d+\.\d+)\.(\d+)-slim-(\w+)(@sha256:[0-9a-f]{64})?", stage.base)
        assert match is not None, f"{stage.base}: not python:X.Y.Z-slim-<debian release>"
        assert match.group(1) == required.group(1), (stage.base, PROJECT["requires-python"])
    assert len({stage.base for stage in STAGES}) == 1, "the builder and the image share one interpreter"


def test_the_wheel_is_built_in_a_builder_stage_and_only_its_result_reaches_the_image() -> None:
    assert len(STAGES) >= 2
    builder = STAGES[0]
    assert builder.name == "builder"
    assert any("pip wheel" in run for run in builder.all("RUN"))
    copies = FINAL.all("COPY")
    assert copies, "the image gets the virtualenv from the builder"
    assert all(c.startswith("--from=builder ") for c in copies), copies


@pytest.mark.parametrize("tool", ["gcc", "build-essential", "apt-get", "pip install", "pip wheel", "make "])
def test_the_final_stage_installs_no_build_tools(tool: str) -> None:
    assert not [run for run in FINAL.all("RUN") if tool in run]


def test_the_project_is_installed_with_the_extras_the_roles_need() -> None:
    (install,) = [run for run in STAGES[0].all("RUN") if "pip install" in run]
    extras = re.search(r"\[([\w,]+)\]", install)
    assert extras is not None
    assert set(extras.group(1).split(",")) == {"agent", "postgres", "oidc"}
    assert set(extras.group(1).split(",")) <= set(PROJECT["optional-dependencies"])


def test_the_entrypoint_is_the_kgm_console_script_and_the_default_command_parses() -> None:
    assert exec_form(FINAL, "ENTRYPOINT") == ["kgm"]
    assert PROJECT["scripts"]["kgm"] == "kgm.cli:main"
    with pytest.raises(SystemExit) as exited:
        kgm_parser({}).parse_args(exec_form(FINAL, "CMD"))
    assert exited.value.code == 0


def test_the_image_label_carries_the_projects_version() -> None:
    (version,) = FINAL.all("ARG")
    assert version == f"VERSION={PROJECT['version']}"
    assert any('org.opencontainers.image.version="${VERSION}"' in label for label in FINAL.all("LABEL"))


def test_the_virtualenv_comes_first_on_path_for_kgm_and_python() -> None:
    (env,) = FINAL.all("ENV")
    path = re.search(r"PATH=(\S+)", env)
    assert path is not None
    assert path.group(1).split(":")[0] == "/opt/kgm/bin"
    assert any("/opt/kgm" in copy for copy in FINAL.all("COPY"))


def test_the_image_user_is_the_numeric_uid_and_gid_the_pods_run_as() -> None:
    (user,) = FINAL.all("USER")
    assert re.fullmatch(r"\d+:\d+", user), f"USER {user}: numeric, so the kubelet can check runAsNonRoot"
    uid, gid = (int(part) for part in user.split(":"))
    assert uid != 0
    as_root = []
    for install in INSTALLS:
        for pod in kgm_pods(render(install)):
            context = pod.spec["securityContext"]
            if context.get("runAsNonRoot"):
                assert (context["runAsUser"], context["runAsGroup"]) == (uid, gid), pod.where
            else:
                as_root.append(pod.workload["metadata"]["name"])
    # Only the node agent runs as root (the kubelet's PodResources socket), and it says so itself.
    assert set(as_root) == {"kgm-agent"}


def test_the_image_exposes_exactly_the_ports_the_containers_declare() -> None:
    (exposed,) = FINAL.all("EXPOSE")
    declared = {
        (port["containerPort"], port.get("protocol", "TCP"))
        for install in INSTALLS
        for pod in kgm_pods(render(install))
        for c in pod.containers
        for port in c.get("ports", [])
    }
    assert {(int(p.split("/")[0]), "TCP") for p in exposed.split()} == declared


@pytest.mark.parametrize("install", INSTALLS, ids=_install_id)
def test_every_command_the_manifests_run_in_the_image_is_one_it_has(install: Path) -> None:
    entrypoint = exec_form(FINAL, "ENTRYPOINT")
    for pod in kgm_pods(render(install)):
        for c in pod.containers:
            argv = [*c.get("command", entrypoint), *c.get("args", [])]
            where = (pod.where, c["name"])
            if argv[0] == "python":  # the kgm-certs Job's step: the virtualenv's python (PATH above)
                assert argv[1] == "-c", where
                continue
            assert argv[0] == "kgm", where
            kgm_parser({}).parse_args(argv[1:])  # exits 2 on an unknown subcommand or option


# ------------------------------------------------------------------------------- the build context


def _pattern(glob: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regular expression (Go's filepath.Match plus ``**``)."""
    glob = glob.strip("/")
    text = re.escape(glob).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
    return re.compile(text)


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or a directory above it decides; ``!`` keeps."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        regex = _pattern(pattern.removeprefix("!"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not pattern.startswith("!")
    return ignored


PATTERNS = [
    line.strip()
    for line in DOCKERIGNORE.read_text().splitlines()
    if line.strip() and not line.startswith("#")
]


@pytest.mark.parametrize(
    "path",
    [".venv/bin/python", ".git/HEAD", "tests/data/k8s/x.json", "benchmarks/extender.py", "manifests/x",
     "kgm/__pycache__/cli.cpython-311.pyc", ".mypy_cache/x", "k8s_gpu_management.egg-info/PKG-INFO",
     "docs/install.md"],
)  # fmt: skip
def test_the_build_context_leaves_out(path: str) -> None:
    assert _ignored(path, PATTERNS)


def test_the_build_context_has_everything_the_dockerfile_copies() -> None:
    sources = [
        source
        for stage in STAGES
        for copy in stage.all("COPY")
        if not copy.startswith("--from=")
        for source in shlex.split(copy)[:-1]
    ]
    assert sources
    for source in sources:
        for sample in (source, f"{source.rstrip('/')}/__init__.py"):
            if (REPO / sample).is_file():
                assert not _ignored(sample, PATTERNS), sample
    packages = PROJECT["readme"], "pyproject.toml", *(p.rstrip("*") for p in _package_globs())
    for needed in packages:
        assert any(needed.rstrip("/") == s.rstrip("/").removeprefix("./") for s in sources), needed


def _package_globs() -> list[str]:
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]
    return [str(glob) for glob in tool["setuptools"]["packages"]["find"]["include"]]


# ------------------------------------------------------------------------------- one image entry


def test_kgms_image_name_and_tag_are_set_by_one_images_entry() -> None:
    ((path, entry),) = kgm_images_entries()
    assert path == MANIFESTS / "components" / "image" / "kustomization.yaml"
    assert entry["newTag"] == PROJECT["version"]
    for manifest in MANIFESTS.rglob("*.yaml"):
        if manifest.name == "kustomization.yaml":
            continue
        for named in re.findall(r"image:\s*(\S+)", manifest.read_text()):
            if named.startswith(IMAGE_NAME):
                assert named == IMAGE_NAME, f"{manifest.relative_to(REPO)}: a tag outside the images entry"


@pytest.mark.parametrize("install", INSTALLS, ids=_install_id)
def test_every_install_runs_the_image_of_that_entry(install: Path) -> None:
    ((_path, entry),) = kgm_images_entries()
    expected = f"{entry.get('newName', IMAGE_NAME)}:{entry['newTag']}"
    pods = kgm_pods(render(install))
    assert {pod.workload["metadata"]["name"] for pod in pods} >= {"kgm", "kgm-agent"}
    assert {c["image"] for pod in pods for c in pod.containers} == {expected}


def test_kustomize_edit_set_image_in_a_users_kustomization_replaces_it_everywhere(tmp_path: Path) -> None:
    objs = render_overlay(
        tmp_path / "mine",
        {
            "resources": ["manifests"],
            "images": [{"name": IMAGE_NAME, "newName": "registry.example.com/kgm", "newTag": "0.2.0"}],
        },
    )
    images = {
        c["image"]
        for o in objs
        for spec in _pod_specs(o.get("spec"))
        for c in [*spec.get("initContainers", []), *spec["containers"]]
    }
    assert "registry.example.com/kgm:0.2.0" in images
    assert not [image for image in images if image.startswith(IMAGE_NAME)]
    assert any(image.startswith("registry.k8s.io/kube-scheduler:") for image in images)
