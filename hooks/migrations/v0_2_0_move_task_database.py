"""Migration to v0.2.0: the default task database moved from var/tasks.db to var/state/tasks.db.

Runs in the project folder after `copier update` crosses v0.2.0. Without it, tasks accepted but
not yet run before the update would sit in the old file, unseen by the updated service. It moves
the database with its WAL and shared-memory files, and only when the project uses the default
location (TASK_STORE_URL unset in .env). It never overwrites an existing new database.
"""

import sys
from pathlib import Path

OLD = Path("var/tasks.db")
NEW = Path("var/state/tasks.db")
SIDECARS = ("", "-wal", "-shm")


def uses_default_location() -> bool:
    env = Path(".env")
    if not env.exists():
        return True
    return not any(line.strip().startswith("TASK_STORE_URL=") for line in env.read_text().splitlines())


def main() -> int:
    if not OLD.exists():
        print("v0.2.0 migration: no var/tasks.db; nothing to move")
        return 0
    if not uses_default_location():
        print("v0.2.0 migration: TASK_STORE_URL is set in .env; the database was left where it is")
        return 0
    if NEW.exists():
        print(f"v0.2.0 migration: {NEW} already exists; left {OLD} for you to merge", file=sys.stderr)
        return 0
    NEW.parent.mkdir(parents=True, exist_ok=True)
    for suffix in SIDECARS:
        source = OLD.with_name(OLD.name + suffix)
        if source.exists():
            source.rename(NEW.with_name(NEW.name + suffix))
    print(f"v0.2.0 migration: moved {OLD} to {NEW}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
