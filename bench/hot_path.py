"""Where a scheduled task's time goes: CPU per task by thread, and the event loop's busiest functions.

    python3 bench/hot_path.py [--runner python] [--tasks 3000] [--template PATH] [--work DIR]

Renders the examples variant (from the working tree, or from `--template`, a checkout of another
commit, to compare before and after), installs it, and drives its ASGI app in one process with no
network and no HTTP client in the way: `--tasks` requests to `POST /projects/{id}/tasks` (the
activity-log task of metric 3), one after another, then waits until the store says every task
succeeded. It prints the CPU time per task of each kind of thread (the event loop, the threads
sync endpoints and dependencies run on, the task workers) read from /proc, and the functions that
took most of the event loop's own time (cProfile, which sees only the thread it runs on).

A profile, not a benchmark: cProfile slows what it watches, so the CPU column comes from a second
pass without it. Compare two commits on the same machine, one after the other.
"""

import argparse
import tempfile
from pathlib import Path

from drivers import run_driver
from repository import REPO_ROOT
from variants import install, package_name, render, variant_answers

# Runs inside the rendered project's interpreter.
DRIVER = r'''
import asyncio, cProfile, io, json, os, pstats, sys, tempfile, threading, time

import asgi_post

os.chdir(tempfile.mkdtemp())
os.environ["TASK_QUEUE_SIZE"] = "100000"
os.environ["LOG_LEVEL"] = "INFO"
package, count, profile = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "profile"
app_module = __import__(f"{package}.app", fromlist=["create_app"])
models = __import__(f"{package}.tasks.models", fromlist=["TaskState"])
app = app_module.create_app()
BODY = json.dumps({"task_name": "profiled", "assigned_to": "bench"}).encode()


async def post(path):
    return await asgi_post.post(app, path, BODY)


def thread_cpu():
    """CPU seconds so far of each kind of thread alive."""
    kinds = {}
    for thread in threading.enumerate():
        try:
            fields = open(f"/proc/self/task/{thread.native_id}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks = int(fields[11]) + int(fields[12])
        name = ("event loop" if thread is threading.main_thread()
                else "task workers" if thread.name.startswith(("task-worker", "native"))
                else "request threads" if thread.name.startswith("AnyIO") else "other")
        kinds[name] = kinds.get(name, 0.0) + ticks / os.sysconf("SC_CLK_TCK")
    return kinds


async def succeeded():
    counts = await asyncio.to_thread(app.state.tasks.store.count_states)
    return counts.get(models.TaskState.SUCCEEDED, 0)


async def main():
    async with app.router.lifespan_context(app):
        for index in range(200):  # warm up: imports, connections, caches
            await post(f"/projects/{index % 997 + 1}/tasks")
        while await succeeded() < 200:
            await asyncio.sleep(0.01)
        before, started = thread_cpu(), time.process_time()
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        refused = 0
        for index in range(count):
            refused += await post(f"/projects/{index % 997 + 1}/tasks") != 202
        while await succeeded() < 200 + count - refused:
            await asyncio.sleep(0.01)
        if profiler:
            profiler.disable()
        after, total = thread_cpu(), time.process_time() - started
    per_task = {kind: (after.get(kind, 0) - before.get(kind, 0)) / count * 1e6 for kind in after}
    top = None
    if profiler:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(15)
        top = text.getvalue()
    print(json.dumps({"cpu_us_per_task": total / count * 1e6, "by_thread_us": per_task,
                      "refused": refused, "profile": top}))


asyncio.run(main())
'''


def drive(python: Path, package: str, tasks: int, profile: bool) -> dict[str, object]:
    return run_driver(python, DRIVER, package, str(tasks), "profile" if profile else "plain")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runner", choices=("python", "rust"), default="python")
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--template", type=Path, default=REPO_ROOT, help="a checkout of the template to render")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "cft-hot-path")
    options = parser.parse_args()
    project = options.work / f"{options.runner}-examples"
    render(variant_answers(options.runner), project, template=options.template)
    python = install(project)
    package = package_name(project)
    plain = drive(python, package, options.tasks, profile=False)
    profiled = drive(python, package, options.tasks, profile=True)
    print(f"# {options.tasks} tasks, {options.runner} runner, rendered from {options.template}")
    print(f"CPU per task, all threads: {plain['cpu_us_per_task']:.0f} us (refused: {plain['refused']})")
    for kind, micros in sorted(dict(plain["by_thread_us"]).items(), key=lambda item: -item[1]):
        print(f"  {kind:16} {micros:7.0f} us")
    print("\nThe event loop's own time, top 15 by tottime (cProfile; the loop thread only):")
    print(profiled["profile"])


if __name__ == "__main__":
    main()
