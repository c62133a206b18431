"""Post-copy task: leave a freshly rendered project ready to work in.

Runs in the new project's folder after `copier copy` (never on update). It only:
  1. writes `uv.lock` with `uv lock` (if uv is installed),
  2. makes a first git commit (if git is installed and the folder is not inside a repository),
  3. prints the next steps.
Each step that cannot run is reported and skipped; `copier copy --skip-tasks` skips all of them
and the project still works (README says how to do them by hand).
"""

import shutil
import subprocess
import sys
from pathlib import Path


def run(command: list[str]) -> bool:
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        print(f"  ! {' '.join(command)} failed:\n{result.stderr.strip()}", file=sys.stderr)
    return result.returncode == 0


def lock() -> None:
    if shutil.which("uv") is None:
        print("  - uv not found: run `uv lock` once you have it (https://docs.astral.sh/uv/)")
    elif run(["uv", "lock", "--quiet"]):
        print("  - wrote uv.lock")


def first_commit(author_name: str, author_email: str) -> None:
    if shutil.which("git") is None:
        print("  - git not found: no repository created")
        return
    inside = subprocess.run(
        ["git", "rev-parse", "--is-inside-work-tree"], capture_output=True, text=True, check=False  # noqa: S607
    )
    if inside.returncode == 0:
        print("  - already inside a git repository: left it alone")
        return
    identity = ["-c", f"user.name={author_name}", "-c", f"user.email={author_email}"]
    if (
        run(["git", "init", "--quiet", "--initial-branch=main"])
        and run(["git", "add", "--all"])
        and run(["git", *identity, "commit", "--quiet", "-m", "Scaffold from copier-fastapi-tasks"])
    ):
        print("  - created a git repository with a first commit")


def main() -> None:
    author_name, author_email, package_name = sys.argv[1:4]
    print(f"Setting up {Path.cwd().name}:")
    lock()
    first_commit(author_name, author_email)
    print(
        "\nNext steps:\n"
        f"  cd {Path.cwd()}\n"
        "  uv run pytest                                  # the service's own tests\n"
        f"  uv run uvicorn {package_name}.main:app --reload  # then open http://127.0.0.1:8000/docs\n"
    )


if __name__ == "__main__":
    main()
