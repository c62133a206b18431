"""One run of bench/run.py: prepare the systems, run each metric's measurement in turn, write
results.json, BENCHMARKS.md and latency.png.

Each part is guarded: one that breaks (a template being edited, a tool that is missing) is
reported as failed or not measured, the others still run, and the report is still written.
"""

import shutil
import subprocess
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import deployment
import latency_plot
import report
import task_throughput
import template_time
from lambda_latency import start_smoke_run
from machine import run_metadata
from metrics import DEPLOYMENT, ON_SERVERS
from processes import say
from run_results import Results
from server_rounds import measure_on_fresh_servers
from systems import System
from variants import prepare_systems

SYSTEMS = ("python", "rust", "stock")


class BenchmarkRun:
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
        self.results = Results(only)
        if reuse is not None:
            self.results.take_earlier(reuse, work / "samples.json", only)

    def run(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.logs, ignore_errors=True)
        self.logs.mkdir(parents=True)
        started_at = time.time()
        on_servers = [metric for metric in ON_SERVERS if metric.NUMBER in self.only]
        deployment_wanted = bool(self.only & DEPLOYMENT)
        celery: Any = None
        postgres: Any = None
        lambda_part: Any = None
        try:
            if on_servers:
                self.guarded("preparing the systems", self.prepare, SYSTEMS)
            if self.smoke:
                # Smoke numbers mean nothing: overlap the other scripts with our measurements.
                celery = self.guarded("starting celery_throughput.py", self.start_celery, (), "celery")
                postgres = self.guarded("starting postgres_throughput.py", self.start_postgres, (), "postgres")
                if deployment_wanted:
                    lambda_part = self.guarded(
                        "starting the Lambda part",
                        lambda: start_smoke_run(self.work / "deploy-smoke", self.logs),
                        (),
                        "deploy",
                    )
            if on_servers:
                self.guarded(
                    "measuring the metrics on the servers",
                    lambda: measure_on_fresh_servers(on_servers, self.systems, self.results, self.sizes),
                    SYSTEMS,
                )
            for system in self.systems.values():
                system.stop()
            if not self.smoke:
                celery = self.guarded("starting celery_throughput.py", self.start_celery, (), "celery")
            self.guarded("running celery_throughput.py", lambda: self.finish_celery(celery), (), "celery")
            if not self.smoke:  # one script at a time on a full run: neither disturbs the other
                postgres = self.guarded("starting postgres_throughput.py", self.start_postgres, (), "postgres")
            self.guarded("running postgres_throughput.py", lambda: self.finish_postgres(postgres), (), "postgres")
            if deployment_wanted:
                self.guarded("measuring the deployment", lambda: self.measure_deployment(lambda_part), (), "deploy")
            if template_time.NUMBER in self.only:
                if not self.smoke:  # a smoke run's renders (prepare) were timed; that is enough for it
                    scratch = self.work / "copier-timing"
                    self.guarded(
                        "timing copier copy",
                        lambda: template_time.time_copier_copy(self.results, scratch, self.sizes.copy_runs),
                        (),
                    )
                self.results.data["ci"] = template_time.ci_test_run_seconds()
        finally:
            for script in (celery, postgres):
                if isinstance(script, subprocess.Popen):
                    task_throughput.stop_script(script)  # it stops the servers it started
            if isinstance(lambda_part, subprocess.Popen) and lambda_part.poll() is None:
                lambda_part.kill()
            for system in self.systems.values():
                system.stop()
            self.write(started_at)

    def guarded(self, what: str, step: Callable[[], Any], systems: tuple[str, ...], result: str | None = None) -> Any:
        """Run one part; if it raises, record why against what it was for and go on."""
        try:
            return step()
        except Exception as error:
            reason = f"failed: {what}: {type(error).__name__}: {error}"
            say(reason)
            traceback.print_exc()
            self.results.record_failure(reason, systems, result)
            return None

    def prepare(self) -> None:
        prepare_systems(self.systems, self.results, work=self.work, logs=self.logs, sizes=self.sizes, smoke=self.smoke)

    def start_celery(self) -> Any:
        if task_throughput.NUMBER not in self.only:
            return None
        return task_throughput.start_celery(self.sizes, self.work, self.logs)

    def finish_celery(self, process: Any) -> None:
        if process is not None:
            limit = 600 if self.smoke else 3600
            self.results.data["celery"] = task_throughput.finish_celery(process, self.work, self.logs, limit)

    def start_postgres(self) -> Any:
        if task_throughput.NUMBER not in self.only:
            return None
        return task_throughput.start_postgres(self.sizes, self.work, self.logs)

    def finish_postgres(self, process: Any) -> None:
        if process is not None:
            limit = 600 if self.smoke else 3600
            self.results.data["postgres"] = task_throughput.finish_postgres(process, self.work, self.logs, limit)

    def measure_deployment(self, lambda_part: Any) -> None:
        if self.smoke:
            deploy_projects = sorted((self.work / "deploy-smoke").glob("*/Dockerfile.lambda"))
            project = deploy_projects[0].parent if deploy_projects else self.work / "render" / "python"
            numbers = deployment.smoke_run(
                lambda_part or {"missing": "not started"}, self.work / "deploy-smoke", self.logs, project, timeout=300
            )
        else:
            say("running bench/deployment.py --runs 3 (image builds; minutes) ...")
            numbers = deployment.full_run(self.logs, runs=3, timeout=3600)
            say("bench/deployment.py done")
        self.results.data["deploy"] = numbers

    def write(self, started_at: float) -> None:
        meta = run_metadata(started_at, sizes=self.sizes, smoke=self.smoke, results=self.results, systems=self.systems)
        self.results.write(self.output / "results.json", self.work / "samples.json", meta)
        data, samples = self.results.data, self.results.samples
        report.write_markdown(self.report_path, meta, data, self.sizes, self.smoke)
        if any(samples.get(key) for key in ("m1", "m2")) or not self.plot_path.exists():
            latency_plot.write_plot(self.plot_path, samples, data, self.sizes)
        else:
            say(f"kept {self.plot_path}: the reused run's latency samples are not in {self.work}")
