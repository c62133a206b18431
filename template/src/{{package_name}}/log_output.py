"""Where log lines go: a stream (stderr), written off the event loop's thread.

Writing a line to a pipe or a file lets go of the GIL, and on a busy process the thread that
wrote it then waits for another thread to give the GIL back: the event loop waited so once per
request, for its access line (about 0.2 ms a request under load). So the loop's lines below
WARNING are handed to a writer thread. Every other line is written where it is logged, as before,
after the lines handed over before it: a warning or an error is out, in order, before the code
that logged it goes on. What is still waiting is written by `flush()`, which logging calls at
exit and the Lambda handler at the end of each invocation.
"""

import asyncio
import logging
import os
import queue
import threading
import traceback
import weakref
from typing import TextIO


class LogOutput(logging.StreamHandler[TextIO]):
    """A StreamHandler whose lines logged on an event loop below WARNING are written by a
    thread of its own."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._handed_over: queue.SimpleQueue[str] = queue.SimpleQueue()
        # Set when lines are handed over. The writer takes them only with the handler's lock
        # held, as every other write does, so no line is written out of turn.
        self._lines_waiting = threading.Event()
        self._writer: threading.Thread | None = None
        _outputs.add(self)

    def handle(self, record: logging.LogRecord) -> bool:
        # Handler.handle, but without the handler's lock for a line handed over: the writer
        # holds it while it writes, and the loop must not wait for that either.
        if not self.filter(record):
            return False
        if record.levelno < logging.WARNING and _on_event_loop():
            self._hand_over(record)
        else:
            with self.lock:  # type: ignore[union-attr] # made by Handler.__init__
                self._write_handed_over()
                self.emit(record)
        return True

    def flush(self) -> None:
        """Write every line handed over so far, then flush the stream."""
        with self.lock:  # type: ignore[union-attr]
            self._write_handed_over()
            super().flush()

    def _hand_over(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._handed_over.put(line)
        self._lines_waiting.set()
        writer = self._writer
        if writer is None or not writer.is_alive():
            self._start_writer()

    def _start_writer(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(
                    target=self._write_forever, name="log-writer", daemon=True
                )
                self._writer.start()

    def _write_forever(self) -> None:
        while True:
            self._lines_waiting.wait()
            self._lines_waiting.clear()
            with self.lock:  # type: ignore[union-attr]
                self._write_handed_over()

    def _write_handed_over(self) -> None:
        """Write the lines waiting, in order (the handler's lock held)."""
        # Checked first: every line written where it is logged comes through here, and most
        # find nothing waiting. Only lock holders take lines, so none vanish between the two.
        if self._handed_over.empty():
            return
        lines = []
        while not self._handed_over.empty():
            lines.append(self._handed_over.get_nowait())
        self._write_lines(lines)

    def _write_lines(self, lines: list[str]) -> None:
        try:
            self.stream.write("".join(line + self.terminator for line in lines))
            self.stream.flush()
        except Exception:
            # What logging does with a line it cannot write: say so on stderr, and go on.
            if logging.raiseExceptions:
                traceback.print_exc()

    def _after_fork_in_child(self) -> None:
        # A forked child (a Celery prefork worker) has a copy of the lines the parent had not
        # written yet, which the parent writes, and no writer thread: one starts when needed.
        self._handed_over = queue.SimpleQueue()
        self._lines_waiting = threading.Event()
        self._writer = None


_outputs: "weakref.WeakSet[LogOutput]" = weakref.WeakSet()


def _forget_parents_lines() -> None:
    for output in list(_outputs):
        output._after_fork_in_child()


os.register_at_fork(after_in_child=_forget_parents_lines)


def flush_log_output() -> None:
    """Write every line still waiting, of every output (the end of a Lambda invocation)."""
    for output in list(_outputs):
        output.flush()


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
