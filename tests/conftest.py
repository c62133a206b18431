"""Template test fixtures: rendered variants are cached per session and shared by the tests."""

from pathlib import Path

import pytest

from .rendering import Variant, render_variant


class RenderCache:
    """Renders each variant once per test session (per xdist worker)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._rendered: dict[str, Path] = {}

    def get(self, variant: Variant) -> Path:
        if variant.id not in self._rendered:
            destination = self.root / variant.id
            render_variant(variant.answers, destination)
            self._rendered[variant.id] = destination
        return self._rendered[variant.id]


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> RenderCache:
    return RenderCache(tmp_path_factory.mktemp("variants"))
