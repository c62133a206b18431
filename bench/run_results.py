"""What one run collects, how `--reuse` takes an earlier run's numbers, and results.json.

`data` is results.json without its "meta": the per-run statistics under the keys below, why a
system is unavailable, which metrics were left out. `samples` are the raw latencies behind the
plot, kept in <work>/samples.json (not committed) so that a later `--only ... --reuse` run can
still draw them.
"""

import json
from pathlib import Path
from typing import Any

# The results.json keys (and samples.json keys) each metric fills. These are the keys every run
# of this benchmark has written, so `--reuse` reads any earlier results.json.
KEYS = {
    1: ["m1"],
    2: ["m2"],
    3: ["m3", "celery", "postgres"],
    4: ["deploy"],
    5: ["copy", "ci"],
    6: ["deploy"],
    7: ["m7"],
    8: ["m8"],
}
SAMPLE_KEYS = {1: ["m1"], 2: ["m2", "m2_idle"]}
ON_SERVERS = ("m1", "m2", "m3", "m7", "m8")


class Results:
    def __init__(self, only: set[int]) -> None:
        self.data: dict[str, Any] = {
            "m1": {},
            "m2": {},
            "m3": {},
            "m7": {},
            "m8": {},
            "celery": None,
            "postgres": None,
            "deploy": None,
            "copy": {},
            "ci": None,
            "unavailable": {},
            "skipped": {str(n): "not selected (--only)" for n in KEYS if n not in only},
        }
        self.samples: dict[str, Any] = {"m1": {}, "m2": {}, "m2_idle": {}}
        self.versions: dict[str, str] = {}
        self.reused: dict[str, Any] = {}

    @property
    def unavailable(self) -> dict[str, str]:
        """Why a system ("python", "rust", "stock") could not be measured."""
        return self.data["unavailable"]

    def take_earlier(self, path: Path, samples_path: Path, only: set[int]) -> None:
        """Take the metrics this run does not measure from an earlier run's results.json."""
        data = json.loads(path.read_text())
        samples = json.loads(samples_path.read_text()) if samples_path.exists() else {}
        taken = []
        for number, keys in KEYS.items():
            if number in only:
                continue
            if not any(key in data for key in keys):  # a run from before this metric existed
                self.data["skipped"][str(number)] = f"not measured: not in the reused {path.name} (an older run)"
                continue
            for key in keys:
                self.data[key] = data.get(key)
            for key in SAMPLE_KEYS.get(number, []):
                self.samples[key] = samples.get(key, {})
            self.data["skipped"].pop(str(number), None)
            taken.append(number)
        self.data["copy"] = self.data.get("copy") or {}
        for key, reason in (data.get("unavailable") or {}).items():
            self.unavailable.setdefault(key, reason)
        self.versions = data.get("meta", {}).get("versions", {})
        # Each metric keeps the date of the run that measured it, through any chain of reuses.
        meta = data.get("meta", {})
        earlier = meta.get("reused") or {}
        dates = {
            str(number): (earlier.get("dates") or {}).get(str(number))
            or (earlier.get("date") if number in earlier.get("metrics", []) else None)
            or meta.get("date", "?")
            for number in taken
        }
        self.reused = {"metrics": taken, "date": meta.get("date", "?"), "dates": dates}

    def has_numbers(self, system: str) -> bool:
        return any((self.data[key] or {}).get(system) for key in ON_SERVERS)

    def record_failure(self, reason: str, systems: tuple[str, ...], result: str | None) -> None:
        """A part failed: say so for the systems (and the result key) it was for, unless they already have numbers."""
        for key in systems:
            if key not in self.unavailable and not self.has_numbers(key):
                self.unavailable[key] = reason
        if result is not None and not (self.data.get(result) or {}).get("missing"):
            self.data[result] = {"missing": reason}

    def write(self, path: Path, samples_path: Path, meta: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"meta": meta, **self.data}, indent=2, default=str) + "\n")
        # The raw latencies (for the plot of a later `--only ... --reuse` run); not committed.
        samples_path.write_text(json.dumps(self.samples))
