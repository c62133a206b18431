"""Metric 6: the sizes of the container and Lambda images (the app's share over its base image),
and the time from `docker run` until the container's /health answers 200.

deployment.py builds the images (a full run); a smoke run builds none and reads the sizes of
images already built on this machine, by the Docker tests or an earlier deployment.py run.
"""

import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import repository  # noqa: F401  (puts tests/ on sys.path)
from report_cells import Table, not_measured, runner_name, seconds

from tests.baseimages import image_defaults
from tests.images import API_KEYS_ENV, DEPLOYED_VARIANTS, Container, docker_engine_problem, http, image_tag, wait_until

NUMBER = 6
NAME = "image_sizes"
DOCKERFILES = (("Dockerfile", "container"), ("Dockerfile.lambda", "lambda"))


def wanted_images() -> list[dict[str, str]]:
    """deployment.py's variants and the tags it builds them under."""
    return [
        {
            "variant": variant.id,
            "runner": variant.answers["task_runner"],
            "image": kind,
            "tag": image_tag(variant, kind),
        }
        for variant in DEPLOYED_VARIANTS
        for _, kind in DOCKERFILES
    ]


def image_size_mb(tag: str) -> float | None:
    result = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Size}}", tag], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        return None
    return int(result.stdout.strip()) / 1_000_000


def base_images(project: Path) -> dict[str, str]:
    """The runtime stage's base image of each Dockerfile of a rendered project (its default)."""
    bases: dict[str, str] = {}
    for dockerfile, kind in DOCKERFILES:
        path = project / dockerfile
        if not path.exists():
            continue
        defaults = image_defaults(path)
        if "PYTHON_IMAGE" in defaults:  # the runtime stage's base (the others build the wheel)
            bases[kind] = defaults["PYTHON_IMAGE"]
    return bases


def add_base_sizes(report: dict[str, Any], project: Path | None) -> None:
    """Each image's base (as its Dockerfile names it) and the base's size, for the app's share."""
    if project is None:
        return
    bases = base_images(project)
    for entry in report.get("images", []):
        tag = bases.get(entry["image"])
        if tag:
            entry["base_image"] = tag
            entry["base_size_mb"] = image_size_mb(tag)


def add_built_sizes(report: dict[str, Any], project: Path | None) -> None:
    """The smoke run's share: the sizes of the wanted images already built here, if any."""
    problem = docker_engine_problem()
    if problem:
        report["images_missing"] = problem
        return
    for entry in wanted_images():
        size = image_size_mb(entry["tag"])
        if size is None:
            entry["missing"] = "image not built on this machine yet (a smoke run builds none; deployment.py does)"
        else:
            entry["size_mb"] = round(size, 1)
        report["images"].append(entry)
    add_base_sizes(report, project)


def container_startup_seconds(image: str, runs: int) -> float:
    """Median time from `docker run` to the first 200 from /health (with keys: the image runs with
    AUTH_MODE=api_key and does not start without)."""
    times = []
    for _ in range(runs):
        started = time.monotonic()
        container = Container.start(image, env=API_KEYS_ENV, options=("--publish", "127.0.0.1::8000"))
        try:
            url = f"http://127.0.0.1:{container.published_port(8000)}/health"
            wait_until(lambda url=url: http("GET", url, timeout=1).status == 200, 60, 0.01, "/health 200")
            times.append(time.monotonic() - started)
        finally:
            container.remove()
    return statistics.median(times)


# -- in the report ----------------------------------------------------------------------------


def add_rows(table: Table, results: dict[str, Any], sizes: Any) -> None:
    deploy = results.get("deploy") or {}
    skipped = results.get("skipped", {}).get(str(NUMBER))
    why = skipped or deploy.get("missing") or deploy.get("images_missing")
    images = deploy.get("images", [])
    for kind, kind_label in (("container", "container image"), ("lambda", "Lambda image")):
        for runner in ("python", "rust"):
            label = f"6. {kind_label} size = base image + the app's share ({runner_name(runner)})"
            entry = next((e for e in images if e["image"] == kind and f"-{runner}-" in e["variant"]), None)
            if why or entry is None:
                table.add(label, "—", not_measured(why or "bench/deployment.py reported no such image"), "—")
                continue
            if "size_mb" not in entry:
                table.add(label, "—", not_measured(entry.get("missing", "no size")), "—")
                continue
            table.add(label, "—", size_cell(entry), "—")
    for runner in ("python", "rust"):
        label = f"6. container: `docker run` until /health answers 200 ({runner_name(runner)})"
        entry = next((e for e in images if e["image"] == "container" and f"-{runner}-" in e["variant"]), None)
        if why:
            cell = not_measured(why)
        elif entry is None or "run_to_health_s" not in entry:
            cell = not_measured(
                "the smoke run starts no containers" if "smoke" in deploy.get("source", "") else "no number"
            )
        else:
            cell = seconds(entry["run_to_health_s"])
        table.add(label, "—", cell, "—")


def size_cell(entry: dict[str, Any]) -> str:
    base = entry.get("base_size_mb")
    if not base:
        return f"{entry['size_mb']:.0f} MB (base image size unknown)"
    share = entry["size_mb"] - base
    return (
        f"{entry['size_mb']:.0f} MB = {base:.0f} MB (`{entry['base_image']}`) + {share:.0f} MB "
        f"({share / entry['size_mb']:.0%})"
    )
