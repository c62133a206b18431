"""The stock baseline: FastAPI `BackgroundTasks` written the way the source articles write it.

Plain `def` endpoints, `background_tasks.add_task(fn, *args)`, tasks that `print` and append to a
file in the working directory (the articles' `activities.log`, `document_analysis.json`), the
upload saved under the client's file name, no task ids, no status, no retries. The document
analysis is the same work the template's example does (bytes, lines, words, SHA-256, and column
statistics for a CSV file), written in Python the obvious way, without the articles' `time.sleep`
stand-in.

Run from an empty working directory:  uvicorn stock_app:app

Two things the articles do not write, so that the numbers compare the task machinery and
nothing else:
- `/health` is `async def` like the template's (the articles' sync `def` root endpoint would
  queue behind the background tasks for the same thread pool tokens: worse, but not the point);
- `/noop-task` and `/no-task` exist only for the benchmark: the same endpoint with and without
  one `add_task` of a function that does nothing.
"""

# Written the way the articles write it, not to this repository's lint rules.
# ruff: noqa: B008, B905, SIM105

import csv
import hashlib
import io
import json
from datetime import datetime
from pathlib import Path

from fastapi import BackgroundTasks, FastAPI, File, UploadFile
from pydantic import BaseModel

app = FastAPI()

# Create upload directory
UPLOAD_DIR = Path("uploads")
UPLOAD_DIR.mkdir(exist_ok=True)


class TaskCreate(BaseModel):
    task_name: str
    assigned_to: str


@app.get("/health")
async def health():
    return {"status": "ok"}


# --- cost of scheduling one task -------------------------------------------------------------


def noop():
    pass


@app.post("/noop-task")
def noop_task(background_tasks: BackgroundTasks):
    background_tasks.add_task(noop)
    return {"status": "accepted"}


@app.post("/no-task")
def no_task(background_tasks: BackgroundTasks):
    return {"status": "accepted"}


# --- project activity log (a small task) -----------------------------------------------------


def track_activity(project_id: int, activity: str, user: str):
    timestamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    log_entry = f"[{timestamp}] Project {project_id}: {activity} by {user}\n"

    with open("activities.log", "a") as f:
        f.write(log_entry)
    print(f"Tracked: {activity}")


@app.post("/projects/{project_id}/tasks")
def create_task(project_id: int, task_data: TaskCreate, background_tasks: BackgroundTasks):
    task_id = f"task_{project_id}_{len(task_data.task_name)}"

    background_tasks.add_task(
        track_activity,
        project_id,
        f"created '{task_data.task_name}'",
        task_data.assigned_to,
    )

    return {"task_id": task_id, "status": "created"}


# --- document upload with processing (CPU-heavy task) ----------------------------------------


def process_document(filename: str, file_size: int, uploaded_by: str):
    file_path = UPLOAD_DIR / filename
    content = file_path.read_bytes()

    # Document analysis: the same numbers as the template's example
    lines = content.count(b"\n") + (1 if content and not content.endswith(b"\n") else 0)
    word_count = len(content.split())
    checksum = hashlib.sha256(content).hexdigest()

    processing_result = {
        "filename": filename,
        "file_size": file_size,
        "uploaded_by": uploaded_by,
        "lines": lines,
        "word_count": word_count,
        "sha256": checksum,
        "status": "processed",
        "processed_at": datetime.now().isoformat(),
    }

    # Column statistics for CSV files
    if filename.endswith(".csv"):
        reader = csv.reader(io.StringIO(content.decode("utf-8", errors="replace")))
        header = next(reader, [])
        columns = {name: [] for name in header}
        for row in reader:
            for name, cell in zip(header, row):
                try:
                    columns[name].append(float(cell))
                except ValueError:
                    pass
        processing_result["columns"] = {
            name: {
                "count": len(values),
                "sum": sum(values),
                "min": min(values),
                "max": max(values),
                "mean": sum(values) / len(values),
            }
            for name, values in columns.items()
            if values
        }

    with open("document_analysis.json", "a") as f:
        f.write(json.dumps(processing_result) + "\n")

    print(f"Processed document: {filename} ({file_size} bytes)")


@app.post("/documents/upload")
async def upload_document(
    file: UploadFile = File(...),
    uploaded_by: str = "user",
    background_tasks: BackgroundTasks = BackgroundTasks(),
):
    # Save file immediately
    file_path = UPLOAD_DIR / file.filename

    with open(file_path, "wb") as f:
        content = await file.read()
        f.write(content)
        file_size = len(content)

    # Process document in background
    background_tasks.add_task(process_document, file.filename, file_size, uploaded_by)

    return {
        "filename": file.filename,
        "file_size": file_size,
        "status": "uploaded",
        "message": "File uploaded successfully and is being processed",
    }
