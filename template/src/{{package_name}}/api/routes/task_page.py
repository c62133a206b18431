"""`GET /tasks/ui`: the caller's recent tasks as one small HTML page, for a person with a browser.

It shows how many of the caller's recent tasks are in each state, the queue depth (queued and
retrying now), the newest tasks and the failures with their errors. It reloads itself every
`REFRESH_SECONDS` (`<meta http-equiv="refresh">`); there is no script on it at all.

Why it is safe to serve beside the API, with no switch of its own (unlike the docs pages):
- it is read-only: one GET that reads the store through `TaskService.read` (a failing store is
  the same 503 envelope as `GET /tasks`), with nothing on it that changes anything (no form, no
  script; its policy says `form-action 'none'`);
- it is caller-scoped exactly like `GET /tasks`: it resolves `CurrentCaller`, so without
  credentials (AUTH_MODE api_key or jwt) it is the same 401 envelope; a caller sees only their own
  tasks, an admin everyone's. It shows less than `GET /tasks` (no results, no arguments), and the
  errors it shows are the ones the API shows, already trimmed (`redaction.py`, `ERROR_DETAIL`);
- every value from a record (names, ids, errors: text a client or a task can influence) is
  HTML-escaped, and the page's own Content-Security-Policy (`headers.page_policy`) loads nothing
  and runs nothing: `default-src 'none'`, its one inline stylesheet allowed by its SHA-256 hash,
  not by 'unsafe-inline'. Like every `/tasks` answer it is `Cache-Control: no-store`.

A browser sends no `Authorization` header by itself. The page takes the same credentials as the
API and no others: not a cookie, which a browser also sends with the requests other sites' pages
make, nor a query parameter, which lands in logs and history. Read it with AUTH_MODE=none on a
private network only, or through a proxy that adds the header (README.md, "The task page").
"""

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from ...auth import CurrentCaller
from ...headers import page_policy
from ...tasks import TaskRecord, TaskService, TaskState
from ...tasks.models import utcnow
from ...tasks.store import TaskStore

# Registered before the tasks router (api/__init__.py), so that `ui` is never read as a task id.
router = APIRouter(prefix="/tasks", tags=["tasks"])

# The records read per state to count them: a state that has this many shows "500+". One read
# per state, as `GET /tasks?state=` makes: an index serves each (a caller's own on DynamoDB, which
# a state then filters, so there a count costs up to the caller's records in retention).
COUNTED = 500
# The newest tasks listed, and the newest failures shown with their errors.
LISTED = 50
FAILURES_SHOWN = 20
REFRESH_SECONDS = 10
# States that are still to run: together, the queue depth.
WAITING = (TaskState.QUEUED, TaskState.RETRYING)

STYLESHEET = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1d2330;background:#f7f8fa}
h1{font-size:1.4rem;margin:0 0 .2rem}h2{font-size:1.1rem;margin:1.6rem 0 .5rem}
header p{margin:0;color:#5b6270}
dl{display:flex;flex-wrap:wrap;gap:.6rem;margin:0}
dl div{background:#fff;border:1px solid #dde1e7;border-left-width:5px;padding:.4rem .8rem;
min-width:6.5rem}
dt{color:#5b6270}dd{margin:0;font-size:1.5rem;font-weight:600}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:.3rem .6rem;border-bottom:1px solid #e6e9ee;vertical-align:top}
th{background:#eef0f4;font-weight:600}
code,pre{font:12px/1.4 ui-monospace,monospace}
pre{margin:0;white-space:pre-wrap;overflow-wrap:anywhere}
.queued{border-left-color:#8a94a6}.running{border-left-color:#2f6fde}
.retrying{border-left-color:#d98b12}.succeeded{border-left-color:#2e9b54}
.failed{border-left-color:#d23c3c}.cancelled{border-left-color:#6b4fbb}
td.queued,td.running,td.retrying,td.succeeded,td.failed,td.cancelled{font-weight:600}
td.queued{color:#5b6270}td.running{color:#2f6fde}td.retrying{color:#a86a08}
td.succeeded{color:#2e9b54}td.failed{color:#c03030}td.cancelled{color:#6b4fbb}
.depth{margin:.8rem 0 0}.none{color:#5b6270}time{white-space:nowrap}
"""
POLICY = page_policy(STYLESHEET)


@router.get("/ui", response_class=HTMLResponse, include_in_schema=False)
def task_page(request: Request, caller: CurrentCaller) -> HTMLResponse:
    """The page. Left out of the OpenAPI schema: it is for people, not API clients."""
    service: TaskService = request.app.state.tasks
    mine = None if caller.is_admin else caller.id

    def read(store: TaskStore) -> tuple[dict[TaskState, list[TaskRecord]], list[TaskRecord]]:
        by_state = {
            state: store.recent(state=state, limit=COUNTED, caller=mine, with_arguments=False)
            for state in TaskState
        }
        return by_state, store.recent(limit=LISTED, caller=mine, with_arguments=False)

    by_state, latest = service.read(read)
    page = render_page(
        title=request.app.title,
        caller=caller.id,
        sees_all=caller.is_admin,
        counts={state: len(records) for state, records in by_state.items()},
        latest=latest,
        failures=by_state[TaskState.FAILED][:FAILURES_SHOWN],
    )
    # A policy of its own, which the security headers middleware leaves as it is.
    return HTMLResponse(page, headers={"Content-Security-Policy": POLICY})


def render_page(
    *,
    title: str,
    caller: str,
    sees_all: bool,
    counts: dict[TaskState, int],
    latest: Sequence[TaskRecord],
    failures: Sequence[TaskRecord],
) -> str:
    whose = "every caller's tasks" if sees_all else "your tasks"
    depth = sum(counts[state] for state in WAITING)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>Tasks · {escape(title)}</title>
<style>{STYLESHEET}</style>
</head>
<body>
<header>
<h1>Tasks · {escape(title)}</h1>
<p>Signed in as <code>{escape(caller)}</code>, showing {whose}. \
Updated {_time(utcnow())}; reloads every {REFRESH_SECONDS} s. <a href="">Reload now</a></p>
</header>
<main>
<section aria-labelledby="by-state">
<h2 id="by-state">Recent tasks by state</h2>
<dl>
{_lines(_count(state, counts[state]) for state in TaskState)}
</dl>
<p class="depth">Queue depth (queued and retrying now): \
<strong data-queue-depth="{depth}">{_number(depth)}</strong></p>
</section>
<section aria-labelledby="recent">
<h2 id="recent">Newest {LISTED} tasks</h2>
{_table(("id", "name", "state", "attempts", "created", "finished"), map(_task_row, latest))}
</section>
<section aria-labelledby="failures">
<h2 id="failures">Failures</h2>
{_table(("id", "name", "attempts", "finished", "error"), map(_failure_row, failures))}
</section>
</main>
</body>
</html>
"""


def _count(state: TaskState, count: int) -> str:
    return (
        f'<div class="{state.value}"><dt>{state.value}</dt>'
        f'<dd data-count="{state.value}">{_number(count)}</dd></div>'
    )


def _number(count: int) -> str:
    return f"{COUNTED}+" if count >= COUNTED else str(count)


def _task_row(record: TaskRecord) -> str:
    return (
        f'<tr data-task-id="{escape(record.task_id)}">'
        f"<td><code>{escape(record.task_id)}</code></td>"
        f"<td>{escape(record.name)}</td>"
        f'<td class="{record.state.value}" data-state="{record.state.value}">'
        f"{record.state.value}</td>"
        f"<td>{record.attempts} / {record.max_attempts}</td>"
        f"<td>{_time(record.created_at)}</td>"
        f"<td>{_time(record.finished_at)}</td></tr>"
    )


def _failure_row(record: TaskRecord) -> str:
    return (
        f'<tr data-task-id="{escape(record.task_id)}">'
        f"<td><code>{escape(record.task_id)}</code></td>"
        f"<td>{escape(record.name)}</td>"
        f"<td>{record.attempts} / {record.max_attempts}</td>"
        f"<td>{_time(record.finished_at)}</td>"
        f'<td data-error=""><pre>{escape(record.error or "")}</pre></td></tr>'
    )


def _table(headings: Sequence[str], rows: Iterable[str]) -> str:
    body = _lines(rows)
    if not body:
        return '<p class="none">None.</p>'
    head = "".join(f"<th>{heading}</th>" for heading in headings)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _time(moment: datetime | None) -> str:
    if moment is None:
        return ""
    moment = moment.astimezone(UTC)
    return f'<time datetime="{moment.isoformat()}">{moment:%Y-%m-%d %H:%M:%S} UTC</time>'


def _lines(parts: Iterable[str]) -> str:
    return "\n".join(parts)
