"""The data the tests read is a copy, in the repository, of the project's shared material: where that
material sits beside the checkout (``../shared``), each copy still matches it byte for byte."""

import re
from pathlib import Path

import pytest

from tests.support.data import ALIBABA_TRACE, K8S_FIXTURES, K8S_OPENAPI, PACKAGED_MIG_TABLES, REPO, SHARED

#: (the copy in the repository, where it came from under ../shared)
COPIES: list[tuple[Path, Path]] = [
    *((path, SHARED / "fixtures" / "k8s" / path.name) for path in sorted(K8S_FIXTURES.iterdir())),
    *((path, SHARED / "k8s-openapi" / path.name) for path in sorted(K8S_OPENAPI.iterdir())),
    *(
        (path, SHARED / "traces" / "alibaba-gpu-v2023" / path.name)
        for path in sorted(ALIBABA_TRACE.iterdir())
    ),
    (PACKAGED_MIG_TABLES, SHARED / "fixtures" / "mig-profiles.json"),
]


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared is not beside this checkout")
@pytest.mark.parametrize(("copy", "origin"), COPIES, ids=[copy.name for copy, _ in COPIES])
def test_the_copy_still_matches_the_shared_original(copy: Path, origin: Path) -> None:
    assert origin.is_file(), f"{origin} is gone from ../shared: drop the copy or its entry"
    assert copy.read_bytes() == origin.read_bytes(), f"{copy} differs from {origin}: copy it again"


def test_no_test_reads_the_shared_material_itself() -> None:
    """A clone with nothing beside it must pass: tests read tests/data, never ../shared."""
    reads_shared = re.compile(r"""/ ["']shared["']|\.\./shared/""")
    allowed = {Path(__file__).resolve(), REPO / "tests" / "support" / "data.py"}
    offenders = [
        str(path.relative_to(REPO))
        for path in sorted((REPO / "tests").rglob("*.py"))
        if path not in allowed and reads_shared.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
