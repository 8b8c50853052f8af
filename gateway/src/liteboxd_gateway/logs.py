"""JSON logging that never blocks the event loop.

Records go through a queue to a thread that writes them to stderr, so a slow terminal or a full
pipe to journald stalls that thread, never a request. Access lines (one per request) are formatted
on the loop and do not wake the thread: it writes them with the next other record or within
``WRITE_INTERVAL``, all queued in one write. A thread woken, or formatting, per request would take
the GIL from the loop at every request. Access log lines are JSON objects with a request id; they
carry no token (the query string logged is the one forwarded, carriers removed).
"""
import collections
import json
import logging
import logging.handlers
import queue
import sys
import threading
import time

ACCESS_LOGGER = "liteboxd_gateway.access"
# Longest a line waits in the queue; the writer takes everything queued at each wake-up.
WRITE_INTERVAL = 0.1


def record_encoder():
    """The function that turns a record's fields into one line of JSON.

    json.JSONEncoder.encode builds CPython's C encoder anew for every call; records are flat, so
    they need no circular-reference bookkeeping either: one C encoder, made once, does. Where the
    interpreter has no C encoder (``json.encoder.c_make_encoder`` is an implementation detail),
    the standard encoder makes the same text, more slowly.
    """
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is None:
        return json.JSONEncoder(default=str, check_circular=False, separators=(",", ":")).encode
    encode = c_make_encoder(None, str, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True)
    return lambda entry: "".join(encode(entry, 0))


class JsonFormatter(logging.Formatter):
    def __init__(self):
        super().__init__()
        self._encode = record_encoder()
        # Tuples replaced whole: the loop and the writer thread share them.
        self._second = (None, "")
        self._millisecond = (None, "")

    def _time(self, created: float) -> str:
        # The same millisecond's text is reused, and the same second's: access lines come
        # thousands a second.
        millis = int(created * 1000)
        cached = self._millisecond
        if cached[0] == millis:
            return cached[1]
        second, milli = divmod(millis, 1000)
        prefix = self._second
        if prefix[0] != second:
            prefix = self._second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        text = f"{prefix[1]}.{milli:03d}+00:00"
        self._millisecond = (millis, text)
        return text

    def access_line(self, created: float, line) -> str:
        """One access line as JSON: what ``format`` would make of it, with the keys written out."""
        request_id, remote, method, form, sandbox, target, status, duration_ms, size, error = line
        # Escaped: what the client or the host chose freely. The request id, method, form and
        # sandbox id are validated tokens (ACCESS_JSON) and go in as they are.
        return ACCESS_JSON % (
            self._time(created), request_id, "null" if remote is None else _text(remote), method, form,
            "null" if sandbox is None else f'"{sandbox}"', "null" if target is None else _text(target), status,
            duration_ms, size, "" if error is None else ',"error":' + _text(error))

    def format(self, record):
        if isinstance(record, AccessRecord):
            return self.access_line(record.created, record.line)
        # Structured fields travel as ``extra={"fields": {...}}``.
        entry = {"time": self._time(record.created), "level": record.levelname.lower(), "logger": record.name,
                 "message": record.getMessage(), **(getattr(record, "fields", None) or {})}
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return self._encode(entry)


class RecordQueue(logging.handlers.QueueHandler):
    """Puts records on the writer's queue: access lines formatted, others as they are."""

    def __init__(self, writer):
        super().__init__(writer.records)
        self.writer = writer

    def prepare(self, record):
        # Formatting in the writer thread would hold the GIL while the loop waits to get it back
        # after every system call: one access line per request made that the main cost.
        return self.writer.formatter.format(record) if record.name == ACCESS_LOGGER else record

    def enqueue(self, record):
        self.queue.put_nowait(record)
        if not isinstance(record, str):  # access lines wait for the next batch
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
                lines.append(record if isinstance(record, str) else self.formatter.format(record))
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
    global _writer  # pylint: disable=global-statement
    _writer = writer
    return writer


# The writer once ``setup`` routed logging to it: access lines then go to its queue directly.
_writer = None


access_log = logging.getLogger(ACCESS_LOGGER)
# What one request did; ``error`` is None when nothing went wrong. The gateway logs plain tuples in
# this order (no type to construct per request); the names serve the record's ``fields``.
AccessLine = collections.namedtuple("AccessLine", "request_id remote method form sandbox target status duration_ms bytes error")
_text = json.encoder.encode_basestring_ascii
# request_id: a generated id or one matching app.REQUEST_ID_RE; method: a token as llhttp or aiohttp
# parsed it; form: the gateway's own word; sandbox: a Pod name as routing validated it. None of them
# can hold a quote, a backslash or a control character, so they are written without escaping.
ACCESS_JSON = ('{"time":"%s","level":"info","logger":"' + ACCESS_LOGGER + '","message":"request",'
               '"request_id":"%s","remote":%s,"method":"%s","form":"%s","sandbox":%s,"target":%s,"status":%d,'
               '"duration_ms":%.3f,"bytes":%d%s}')


class AccessRecord(logging.LogRecord):
    """The record of one access line. LogRecord's constructor works out the caller's file and
    module names for every record; these are the same for every access line, so they are copied."""

    template = None
    logging_started = 0.0

    def __init__(self, line: tuple):  # pylint: disable=super-init-not-called
        template = AccessRecord.template
        if template is None:
            model = logging.LogRecord(ACCESS_LOGGER, logging.INFO, __file__, 0, "request", None, None)
            # Nothing logged names a thread or process (``setup``), and a forked worker is another process.
            template = AccessRecord.template = {**vars(model), "thread": None, "threadName": None, "process": None,
                                                "processName": None}
            # When logging started, from what a LogRecord reports of itself rather than from logging's
            # private start time (whose unit changed in Python 3.13).
            AccessRecord.logging_started = model.created - model.relativeCreated / 1000
        self.__dict__.update(template)
        created = time.time()
        self.created = created
        self.msecs = int((created - int(created)) * 1000) + 0.0
        self.relativeCreated = (created - AccessRecord.logging_started) * 1000
        self.line = line

    @property
    def fields(self) -> dict:
        """The line as the structured fields of other records."""
        fields = AccessLine._make(self.line)._asdict()
        if fields["error"] is None:
            del fields["error"]
        return fields


def access(line: tuple):
    """Log one access line. After ``setup``, the line the writer's handler would queue is queued
    straight away: no LogRecord, no walk through the loggers and their lock."""
    if access_log.isEnabledFor(logging.INFO):
        if _writer is not None:
            _writer.records.put_nowait(_writer.formatter.access_line(time.time(), line))
        else:
            access_log.handle(AccessRecord(line))
