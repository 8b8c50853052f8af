"""JSON logging that never blocks the event loop.

Records go through a queue to a thread that formats and writes them to stderr, so a slow terminal
or a full pipe to journald stalls that thread, never a request. Access lines do not wake the
thread: it writes them with the next other record or within ``WRITE_INTERVAL``, all queued in one
go, since waking it per request would hand the GIL back and forth at every request. Access log lines are JSON objects with a
request id; they carry no token (the query string logged is the one forwarded, carriers removed).
"""
import datetime
import json
import logging
import logging.handlers
import queue
import sys
import threading

ACCESS_LOGGER = "liteboxd_gateway.access"
# Longest a line waits in the queue; the writer takes everything queued at each wake-up.
WRITE_INTERVAL = 0.1


class JsonFormatter(logging.Formatter):
    def format(self, record):
        entry = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(
                timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        entry["message"] = record.getMessage()
        # Structured fields travel as ``extra={"fields": {...}}``.
        entry.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"), default=str)


class RecordQueue(logging.handlers.QueueHandler):
    """Puts records on the writer's queue as they are (the writer thread formats them)."""

    def __init__(self, writer):
        super().__init__(writer.records)
        self.writer = writer

    def prepare(self, record):
        return record

    def enqueue(self, record):
        self.queue.put_nowait(record)
        if record.name != ACCESS_LOGGER:
            self.writer.wake.set()


class LogWriter:
    """The thread that formats queued records and writes them in batches."""

    def __init__(self, records: queue.SimpleQueue, stream):
        self.records = records
        self.stream = stream
        self.formatter = JsonFormatter()
        self.wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)

    def start(self):
        self._thread.start()

    def stop(self):
        """Write out what is queued and end the thread."""
        self._stopping = True
        self.wake.set()
        self._thread.join()

    def _run(self):
        while not self._stopping:
            self.wake.wait(WRITE_INTERVAL)
            self.wake.clear()
            self._write_queued()
        self._write_queued()

    def _write_queued(self):
        lines = []
        while True:
            try:
                record = self.records.get_nowait()
            except queue.Empty:
                break
            try:
                lines.append(self.formatter.format(record))
            except Exception:  # a record that cannot be formatted must not end the writer
                lines.append(json.dumps({"level": "error", "message": f"unformattable log record {record.msg!r}"}))
        if lines:
            try:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
            except OSError:
                pass  # stderr gone: nothing left to tell


def setup(level: str = "info", stream=None) -> LogWriter:
    """Route every log record through a queue to one writer thread; returns it (stop it to flush)."""
    records = queue.SimpleQueue()
    writer = LogWriter(records, stream or sys.stderr)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(RecordQueue(writer))
    root.setLevel(level.upper())
    # aiohttp logs every broken client connection at error level; that is the client's problem.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    # Nothing logged names a thread or process: spare every record looking them up.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    writer.start()
    return writer


access_log = logging.getLogger(ACCESS_LOGGER)


def access(fields: dict):
    """Log one access line (``fields``), without the caller lookup of ``Logger.info``."""
    if access_log.isEnabledFor(logging.INFO):
        record = logging.LogRecord(ACCESS_LOGGER, logging.INFO, __file__, 0, "request", None, None)
        record.fields = fields
        access_log.handle(record)
