"""The template's Python files stay plain Python: almost no Jinja logic inside them.

An optional part is a whole file (a file name with `{% if %}`) or one registration entry, and what
depends on the answers is computed once in copier.yml (`when: false`). A Python file with `{% if %}`
blocks is opaque to ruff, mypy and editors until rendered, and every variant reads it differently,
so their number is held down here; the variant matrix (test_variants.py) lints every rendering.
"""

import re
from pathlib import Path

from .rendering import REPO_ROOT

TEMPLATE = REPO_ROOT / "template"
# What all Python templates together may hold: the registrations of optional parts (the settings
# of the optional parts, the task backends besides the local one, the example routes).
MOST_LOGIC_TAGS = 6
LOGIC_TAG = re.compile(r"\{%-?\s*(?:if|elif|for)\b")


def python_templates() -> list[Path]:
    """Every file of the template that renders to Python source or a stub."""
    return [
        path
        for path in sorted(TEMPLATE.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and re.search(r"\.pyi?\b", path.name)
    ]


def test_python_templates_hold_only_a_handful_of_jinja_logic_tags() -> None:
    tags = {
        str(path.relative_to(TEMPLATE)): count
        for path in python_templates()
        if (count := len(LOGIC_TAG.findall(path.read_text(encoding="utf-8"))))
    }
    assert sum(tags.values()) <= MOST_LOGIC_TAGS, tags


def test_the_python_templates_are_found() -> None:
    names = {path.name for path in python_templates()}
    assert {"settings.py.jinja", "app.py.jinja", "conftest.py.jinja", "main.py"} <= names
