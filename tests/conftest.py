"""Template test fixtures: rendered variants are cached per session and shared by the tests."""

import shutil
from pathlib import Path

import pytest

from .rendering import Variant, render_variant


class RenderCache:
    """Renders each variant once per test session (per xdist worker) and keeps it as rendered:
    a test that builds, syncs or runs a project works in a `working_copy`, so what another test
    reads (the files copier wrote, and nothing else) does not depend on which ran first."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._rendered: dict[str, Path] = {}

    def get(self, variant: Variant) -> Path:
        if variant.id not in self._rendered:
            destination = self.root / variant.id
            render_variant(variant.answers, destination)
            self._rendered[variant.id] = destination
        return self._rendered[variant.id]

    def working_copy(self, variant: Variant, parent: Path) -> Path:
        """A copy of the rendered variant under `parent`, for a test to build and run."""
        return Path(shutil.copytree(self.get(variant), parent / variant.id, symlinks=True))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest tests first (`heavy(seconds)`), the rest in their order after them.

    xdist hands each worker the next group as it frees up, in this order: started first, the
    suites and image builds of several minutes run side by side, and the quick tests fill the
    gaps at the end, rather than one long suite running last while the other worker idles.
    """
    items.sort(key=lambda item: -expected_seconds(item))


def expected_seconds(item: pytest.Item) -> float:
    mark = item.get_closest_marker("heavy")
    return float(mark.args[0]) if mark else 0.0


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> RenderCache:
    return RenderCache(tmp_path_factory.mktemp("variants"))
