"""The benchmark run: prepare the systems, measure every metric, hand the numbers to the report."""

import asyncio
import concurrent.futures
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import time
import traceback
from pathlib import Path
from typing import Any

import bench_deploy
import bench_report
import httpx
from bench_load import Batch, closed_loop, probe_while, summary, wait_for_count
from bench_servers import (
    LOCAL_PYTHON,
    SetupError,
    System,
    install,
    installed_versions,
    lock_versions,
    render,
    stock_system,
    template_system,
    uv,
    variant_answers,
)

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RUNNERS = {"python": "Python runner", "rust": "Rust runner"}
# metric 5: representative variants for `copier copy` timing (label, answers).
COPY_VARIANTS = [
    ("python runner, container, bare", variant_answers("python", include_examples=False)),
    ("python runner, both targets, examples", variant_answers("python", deploy_target="both")),
    ("rust runner, both targets, examples (the defaults)", variant_answers("rust", deploy_target="both")),
    ("python runner, container, celery, examples", variant_answers("python", task_queue="celery")),
]


class Bench:
    def __init__(
        self, *, sizes: Any, smoke: bool, work: Path, output: Path, only: set[int], reuse: Path | None = None
    ) -> None:
        self.sizes = sizes
        self.smoke = smoke
        self.work = work
        self.output = output
        self.only = only
        self.report_path = output / "BENCHMARKS.md"
        self.plot_path = output / "latency.png"
        self.logs = work / "logs"
        self.systems: dict[str, System] = {}
        self.unavailable: dict[str, str] = {}
        self.versions: dict[str, str] = {}
        self.copy_times: dict[str, list[float]] = {}
        self.results: dict[str, Any] = {
            "m1": {},
            "m2": {},
            "m3": {},
            "celery": None,
            "deploy": None,
            "copy": {},
            "ci": None,
        }
        self.samples: dict[str, Any] = {"m1": {}, "m2": {}, "m2_idle": {}}
        self.skipped: dict[int, str] = {n: "not selected (--only)" for n in range(1, 7) if n not in only}
        self.reused: dict[str, Any] = {}
        if reuse is not None:
            self.load_reused(reuse)

    def load_reused(self, path: Path) -> None:
        """Take the metrics this run does not measure from an earlier run's results.json."""
        data = json.loads(path.read_text())
        saved = self.work / "samples.json"
        samples = json.loads(saved.read_text()) if saved.exists() else {}
        parts = {1: ["m1"], 2: ["m2"], 3: ["m3", "celery"], 4: ["deploy"], 5: ["copy", "ci"], 6: ["deploy"]}
        sample_parts = {1: ["m1"], 2: ["m2", "m2_idle"]}
        taken = []
        for number, keys in parts.items():
            if number in self.only:
                continue
            for key in keys:
                self.results[key] = data.get(key)
            for key in sample_parts.get(number, []):
                self.samples[key] = samples.get(key, {})
            self.skipped.pop(number, None)
            taken.append(number)
        self.copy_times = self.results.get("copy") or {}
        for key, reason in (data.get("unavailable") or {}).items():
            self.unavailable.setdefault(key, reason)
        self.versions = data.get("meta", {}).get("versions", {})
        self.reused = {"metrics": taken, "date": data.get("meta", {}).get("date", "?")}

    # -- the whole run --------------------------------------------------------------------

    def run(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.logs, ignore_errors=True)
        self.logs.mkdir(parents=True)
        started_at = time.time()
        celery: subprocess.Popen[str] | None = None
        lambda_part: Any = None
        # Each part is guarded: one that breaks (a template being edited, a script that moved)
        # is reported as failed, and the others still run and the report is still written.
        try:
            if self.only & {1, 2, 3}:
                self.guarded("preparing the systems", self.prepare, ("python", "rust", "stock"))
            if self.smoke:
                # Smoke numbers mean nothing: overlap the other scripts with our measurements.
                celery = self.guarded("starting celery_bench.py", self.start_celery, (), "celery")
                if self.only & {4, 6}:
                    lambda_part = self.guarded(
                        "starting the Lambda part",
                        lambda: bench_deploy.start_smoke_lambda(self.work / "deploy-smoke", self.logs),
                        (),
                        "deploy",
                    )
            if self.only & {1, 2, 3}:
                self.guarded("measuring metrics 1-3", self.measure_in_process, ("python", "rust", "stock"))
            for system in self.systems.values():
                system.stop()
            if not self.smoke:
                celery = self.guarded("starting celery_bench.py", self.start_celery, (), "celery")
            self.guarded("running celery_bench.py", lambda: self.finish_celery(celery), (), "celery")
            if self.only & {4, 6}:
                self.guarded("measuring the deployment", lambda: self.measure_deploy(lambda_part), (), "deploy")
            if 5 in self.only:
                self.guarded("timing copier copy", self.measure_copy, ())
                self.results["ci"] = ci_run_seconds()
        finally:
            for process in (celery, lambda_part):
                if isinstance(process, subprocess.Popen) and process.poll() is None:
                    process.kill()
            for system in self.systems.values():
                system.stop()
            self.write(started_at)

    def guarded(self, what: str, step: Any, systems: tuple[str, ...], result: str | None = None) -> Any:
        """Run one part; if it raises, record why against what it was for and go on."""
        try:
            return step()
        except Exception as error:
            reason = f"failed: {what}: {type(error).__name__}: {error}"
            say(reason)
            traceback.print_exc()
            for key in systems:
                if key not in self.unavailable and not self.results_for(key):
                    self.unavailable[key] = reason
            if result is not None and not (self.results.get(result) or {}).get("missing"):
                self.results[result] = {"missing": reason}
            return None

    def results_for(self, key: str) -> bool:
        return any(self.results[f"m{n}"].get(key) for n in (1, 2, 3))

    def write(self, started_at: float) -> None:
        self.results["copy"] = self.copy_times
        self.results["unavailable"] = self.unavailable
        self.results["skipped"] = {str(k): v for k, v in self.skipped.items()}
        meta = self.metadata(started_at)
        self.output.mkdir(parents=True, exist_ok=True)
        (self.output / "results.json").write_text(
            json.dumps({"meta": meta, **self.results}, indent=2, default=str) + "\n"
        )
        # The raw latencies (for the plot of a later `--only ... --reuse` run); not committed.
        (self.work / "samples.json").write_text(json.dumps(self.samples))
        bench_report.write_markdown(self.report_path, meta, self.results, self.sizes, self.smoke)
        has_samples = any(self.samples.get(key) for key in ("m1", "m2"))
        if has_samples or not self.plot_path.exists():
            bench_report.write_plot(self.plot_path, self.samples, self.results, self.sizes)
        else:
            say(f"kept {self.plot_path}: the reused run's latency samples are not in {self.work}")

    # -- systems --------------------------------------------------------------------------

    def prepare(self) -> None:
        renders = self.work / "render"
        queue_size = max(1000, self.sizes.tasks + 1000)
        projects: dict[str, tuple[Path, Path]] = {}

        def prepare_variant(key: str) -> None:
            project = renders / key
            label = f"template, {RUNNERS[key]}"
            try:
                took = render(variant_answers(key), project)
                if self.smoke:  # a full run times `copier copy` on its own, without a neighbour
                    self.copy_times.setdefault(f"{key} runner, container, examples", []).append(took)
                say(f"rendered the {key} variant in {took:.1f}s; installing it (uv sync) ...")
                python = install(project)
                say(f"installed the {key} variant")
                self.systems[key] = template_system(
                    key, label, project, python, self.work / "state" / key, self.logs, queue_size
                )
                projects[key] = (project, python)
            except SetupError as error:
                self.unavailable[key] = error.cell
                say(f"{label}: {error.cell}")

        # Two renders at once: copier and uv are mostly waiting on files and subprocesses.
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(prepare_variant, ("python", "rust")))
        reference = projects.get("python") or projects.get("rust")
        if reference is None:
            self.unavailable["stock"] = "failed: no rendered project to take the library versions from"
            return
        try:
            self.systems["stock"] = stock_system(
                self.work / "state" / "stock", self.logs, reference[0], reference[1], self.work / "stock-venv"
            )
        except SetupError as error:
            self.unavailable["stock"] = error.cell
        self.versions = {
            name: version
            for name, version in lock_versions(reference[0]).items()
            if name in ("fastapi", "starlette", "uvicorn", "pydantic", "uvloop", "httptools", "python-multipart")
        }
        if "stock" in self.systems:
            stock_versions = installed_versions(self.systems["stock"].python, list(self.versions))
            mismatched = {n: v for n, v in stock_versions.items() if self.versions.get(n) != v}
            if mismatched:
                say(f"warning: stock baseline versions differ from the template's: {mismatched}")

    def ordered(self, run: int) -> list[System]:
        """The systems, rotated each run, so none is always measured first or last."""
        keys = [k for k in ("stock", "python", "rust") if k in self.systems]
        shift = run % len(keys) if keys else 0
        return [self.systems[k] for k in keys[shift:] + keys[:shift]]

    # -- metrics 1-3 ----------------------------------------------------------------------

    def measure_in_process(self) -> None:
        """Metrics 1-3, each on freshly started servers (no state carried from one to the next)."""
        metrics = [
            (1, "scheduling cost", self.scheduling_cost),
            (2, "health under CPU-heavy tasks", self.health_under_load),
            (3, "task throughput", self.throughput),
        ]
        for number, title, measure in metrics:
            if number not in self.only:
                continue
            for key, system in list(self.systems.items()):
                system.stop()
                # A fresh working directory (task database, logs, uploads): nothing left over
                # from the previous metric can be recovered into this one.
                shutil.rmtree(system.workdir, ignore_errors=True)
                try:
                    system.start()
                except SetupError as error:
                    self.unavailable[key] = error.cell
                    del self.systems[key]
            if not self.systems:
                return
            asyncio.run(self.measure_metric(number, title, measure))

    async def measure_metric(self, number: int, title: str, measure: Any) -> None:
        runs = self.sizes.runs
        for run in range(runs):
            for system in self.ordered(run):
                say(f"metric {number} ({title}), run {run + 1}/{runs}: {system.label}")
                try:
                    await measure(system, run)
                except (httpx.HTTPError, OSError, KeyError, ValueError) as error:
                    say(f"  failed: {type(error).__name__}: {error}")
                    self.results[f"m{number}"].setdefault(system.key, []).append(
                        {"error": f"{type(error).__name__}: {error}"}
                    )
                    await asyncio.to_thread(self.revive, system)
                await self.settle(system)

    def revive(self, system: System) -> None:
        """After a failed run: restart the server if it died or stopped answering."""
        if system.healthy():
            return
        say(f"  {system.label} is not healthy any more: restarting it (see {system.log_path})")
        system.stop()
        try:
            system.start()
        except SetupError as error:
            say(f"  could not restart it: {error}")

    async def settle(self, system: System, timeout: float = 60.0) -> None:
        """Wait until the system has no task queued or running (the stock app cannot say: pause)."""
        if system.kind == "stock":
            await asyncio.sleep(0.3)
            return
        stop_at = time.monotonic() + timeout
        while time.monotonic() < stop_at:
            with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
                counters = await asyncio.to_thread(system.counters)
                if counters["queued"] == 0 and counters["running"] == 0:
                    break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.2)

    async def scheduling_cost(self, system: System, run: int) -> None:
        s = self.sizes
        endpoints = [("nothing", system.endpoints.nothing), ("noop", system.endpoints.noop)]
        if run % 2:
            endpoints.reverse()
        per_run = {}
        for name, path in endpoints:

            async def post(http: httpx.AsyncClient, _: int, path: str = path) -> httpx.Response:
                return await http.post(path)

            await closed_loop(system.base_url, post, count=s.warmup, concurrency=1, deadline=s.timeout)
            await self.settle(system)
            batch = await closed_loop(system.base_url, post, count=s.requests, concurrency=1, deadline=s.timeout)
            per_run[name] = {**summary(batch.latencies), "rejected": batch.rejected, "timed_out": batch.timed_out}
            self.samples["m1"].setdefault(system.key, {}).setdefault(name, []).extend(batch.latencies)
            await self.settle(system)
        self.results["m1"].setdefault(system.key, []).append(per_run)

    async def health_under_load(self, system: System, run: int) -> None:
        s = self.sizes
        idle = await probe_while(system.base_url, asyncio.sleep(s.idle_probe_seconds), interval=s.probe_interval)
        counter = system.finished_counter("document")
        before = await asyncio.to_thread(counter)
        body = csv_document(s.document_bytes)
        outcome: dict[str, Any] = {}

        async def upload(http: httpx.AsyncClient, index: int) -> httpx.Response:
            name = f"bench-{run}-{index}.csv"
            return await http.post("/documents/upload", files={"file": (name, body, "text/csv")})

        async def work() -> None:
            started = time.perf_counter()
            batch = await closed_loop(
                system.base_url, upload, count=s.documents, concurrency=s.upload_concurrency, deadline=s.timeout
            )
            outcome["batch"] = batch
            outcome["uploaded"] = time.perf_counter() - started
            done = await wait_for_count(counter, before + batch.accepted, timeout=s.timeout)
            outcome["seconds"] = None if done is None else done - started

        failed_before = await asyncio.to_thread(system.failed_count)
        probed = await probe_while(system.base_url, work(), interval=s.probe_interval)
        batch: Batch = outcome["batch"]
        if outcome["seconds"] is None:
            raise ValueError(f"not every accepted document was analysed within {s.timeout:.0f}s")
        if batch.accepted == 0:
            raise ValueError(f"no upload was accepted: {batch.statuses}, {batch.errors} errors")
        self.samples["m2"].setdefault(system.key, []).extend(probed.latencies)
        self.samples["m2_idle"].setdefault(system.key, []).extend(idle.latencies)
        self.results["m2"].setdefault(system.key, []).append(
            {
                "health": summary(probed.latencies),
                "health_errors": probed.errors,
                "idle": summary(idle.latencies),
                "documents_accepted": batch.accepted,
                "documents_rejected": batch.rejected,
                "upload_seconds": outcome["uploaded"],
                "work_seconds": outcome["seconds"],
                "tasks_failed": await asyncio.to_thread(system.failed_count, failed_before),
            }
        )
        await self.settle(system)
        await asyncio.to_thread(system.clear_uploads)

    async def throughput(self, system: System, run: int) -> None:
        s = self.sizes
        counter = system.finished_counter("activity")
        before = await asyncio.to_thread(counter)

        async def create(http: httpx.AsyncClient, index: int) -> httpx.Response:
            body = {"task_name": f"bench task {index}", "assigned_to": "bench"}
            return await http.post(f"/projects/{index % 997 + 1}/tasks", json=body)

        failed_before = await asyncio.to_thread(system.failed_count)
        started = time.perf_counter()
        batch = await closed_loop(
            system.base_url, create, count=s.tasks, concurrency=s.task_concurrency, deadline=s.timeout
        )
        scheduled = time.perf_counter() - started
        done = await wait_for_count(counter, before + batch.accepted, timeout=s.timeout, interval=0.05)
        if done is None:
            raise ValueError(f"not every accepted task was final within {s.timeout:.0f}s")
        if batch.accepted == 0:
            raise ValueError(f"no task was accepted: {batch.statuses}, {batch.errors} errors")
        seconds = done - started
        self.results["m3"].setdefault(system.key, []).append(
            {
                "seconds": seconds,
                "http_seconds": scheduled,
                "accepted": batch.accepted,
                "rejected": batch.rejected,
                "tasks_per_second": batch.accepted / seconds,
                "tasks_failed": await asyncio.to_thread(system.failed_count, failed_before),
            }
        )

    # -- metrics 3 (Celery), 4 and 6: the other engineers' scripts ------------------------

    def start_celery(self) -> subprocess.Popen[str] | None:
        """bench/celery_bench.py as it is, under the interpreter run.py was started with."""
        if 3 not in self.only:
            return None
        script = BENCH_DIR / "celery_bench.py"
        if not script.exists():
            self.results["celery"] = {"missing": "bench/celery_bench.py is not in the repository yet"}
            return None
        if shutil.which("redis-server") is None:
            self.results["celery"] = {"missing": "redis-server is not installed (bash .ci/install-celery.sh)"}
            return None
        output = self.work / "external" / "celery.json"
        output.parent.mkdir(parents=True, exist_ok=True)
        output.unlink(missing_ok=True)
        command = [
            bench_deploy.host_python(), str(script),
            "--tasks", str(self.sizes.celery_tasks), "--json", str(output),
        ]  # fmt: skip
        env = {**os.environ, "PATH": f"{Path(uv()).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        say(f"running bench/celery_bench.py --tasks {self.sizes.celery_tasks} ...")
        log = (self.logs / "celery_bench.log").open("w")
        return subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, env=env
        )

    def finish_celery(self, process: subprocess.Popen[str] | None) -> None:
        if process is None:
            return
        limit = 600 if self.smoke else 3600
        try:
            process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            self.results["celery"] = {"missing": f"failed: bench/celery_bench.py did not finish within {limit}s"}
            return
        output = self.work / "external" / "celery.json"
        if process.returncode == 0 and output.exists():
            self.results["celery"] = json.loads(output.read_text())
            say("bench/celery_bench.py done")
        else:
            why = bench_deploy.last_line(self.logs / "celery_bench.log")
            self.results["celery"] = {"missing": f"failed: bench/celery_bench.py exited {process.returncode}: {why}"}

    def measure_deploy(self, lambda_part: Any) -> None:
        if self.smoke:
            deploy_projects = sorted((self.work / "deploy-smoke").glob("*/Dockerfile.lambda"))
            project = deploy_projects[0].parent if deploy_projects else self.work / "render" / "python"
            self.results["deploy"] = bench_deploy.finish_smoke(
                lambda_part or {"missing": "not started"}, self.work / "deploy-smoke", self.logs, project, timeout=300
            )
        else:
            say("running bench/deploy_bench.py --runs 3 (image builds; minutes) ...")
            self.results["deploy"] = bench_deploy.full_run(self.logs, runs=3, timeout=3600)
            say("bench/deploy_bench.py done")

    # -- metric 5 -------------------------------------------------------------------------

    def measure_copy(self) -> None:
        if self.smoke:
            return  # the renders of prepare() were timed; that is enough for a smoke run
        scratch = self.work / "copier-timing"
        for run in range(self.sizes.copy_runs):
            for label, answers in COPY_VARIANTS:
                destination = scratch / f"{run}-{abs(hash(label))}"
                try:
                    took = render(answers, destination)
                except SetupError as error:
                    self.copy_times[label] = [float("nan")]
                    say(f"copier copy {label}: {error}")
                    continue
                finally:
                    shutil.rmtree(destination, ignore_errors=True)
                self.copy_times.setdefault(label, []).append(took)
                say(f"copier copy {label}: {took:.1f}s")

    # -- the machine ----------------------------------------------------------------------

    def metadata(self, started_at: float) -> dict[str, Any]:
        return {
            "date": datetime_utc(started_at),
            "duration_s": round(time.time() - started_at),
            "mode": "smoke" if self.smoke else "full",
            "runs": self.sizes.runs,
            "sizes": vars(self.sizes) if hasattr(self.sizes, "__dict__") else {},
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "memory_gib": memory_gib(),
            "kernel": os.uname().release,
            "python": LOCAL_PYTHON,
            "versions": self.versions,
            "commit": git_commit(),
            "systems": {key: system.label for key, system in self.systems.items()},
            "unavailable": self.unavailable,
            "reused": self.reused,
        }


def csv_document(size: int) -> bytes:
    """A deterministic CSV document of about `size` bytes: a header, numeric and text columns."""
    rows = ["id,product,price,quantity,rating,weight,discount,note"]
    total = len(rows[0]) + 1
    state = 12345
    index = 0
    while total < size:
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        index += 1
        row = (
            f"{index},item-{state % 9973},{state % 100000 / 100:.2f},{state % 50},"
            f"{1 + state % 5},{(state >> 7) % 10000 / 1000:.3f},{-(state % 30)},"
            f"{'great value' if state % 3 else 'arrived late'}"
        )
        rows.append(row)
        total += len(row) + 1
    return ("\n".join(rows) + "\n").encode()


def ci_run_seconds() -> dict[str, Any]:
    """The whole template test run, from the last CI log (`issues ci`), if there is one."""
    override = os.environ.get("BENCH_CI_LOG")
    text = ""
    if override and Path(override).exists():
        text = Path(override).read_text(errors="replace")
    elif shutil.which("issues"):
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            text = subprocess.run(["issues", "ci"], capture_output=True, text=True, timeout=60, check=False).stdout
    match = re.search(r"template test run took (\d+)s", text)
    if match:
        source = "the CI log BENCH_CI_LOG names" if override else "last CI log"
        return {"seconds": int(match.group(1)), "source": source}
    return {
        "missing": "no CI log on record yet (`issues ci` has none); .ci/run prints it as 'template test run took Ns'"
    }


def datetime_utc(moment: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M UTC")


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def memory_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return None


def git_commit() -> str:
    """HEAD, read-only (the working tree on top of it is what was rendered)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        result = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=False
        )
        if result.returncode == 0:
            return result.stdout.strip()
    return "unknown"


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and v == v]
    return statistics.median(values) if values else None


_T0 = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", flush=True)
