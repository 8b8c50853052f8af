# Declarations that let Cython compile http1.py into typed classes (see gateway/README.md).
from .writes cimport HeldWriter, HeldWrites


cdef class Request:
    cdef public str method
    cdef public str raw_path
    cdef public str version
    cdef public object headers
    cdef public bint keep_alive
    cdef public bint has_body
    cdef public bint has_length
    cdef public object body
    cdef public object exchange

    cpdef cancel(self)


cdef class ClientConnection(HeldWriter):
    cdef public object gateway
    cdef public object config
    cdef public Py_ssize_t max_header_size
    cdef public Py_ssize_t max_headers
    cdef public Py_ssize_t max_head_bytes
    cdef public object connections
    cdef public object websocket_server
    cdef public object loop
    cdef public str peer_host
    cdef public object parser
    cdef public bytes _url
    cdef public list _fields
    cdef public Py_ssize_t _head_bytes
    cdef public bint _in_head
    cdef public Request _parsing
    cdef public Request _upgrade
    cdef public object _queue
    cdef public Request _serving
    cdef public bint _dispatching
    cdef public object _idle_timer
    cdef public object _idle_since
    cdef public set _paused
    cdef public object _drained
    cdef public bint _write_paused
    cdef public bint _chunked
    cdef public bint _closing
    cdef public bint response_started
    cdef public Py_ssize_t body_bytes

    cpdef pause_reading(self, str reason)
    cpdef resume_reading(self, str reason)
    cpdef _close(self)
    cpdef _arm_idle(self)
    cpdef _cancel_idle(self)
    cpdef _serve_next(self)
    cpdef finished(self, Request request)
    cpdef bytes _head(self, int status, list fields, str version, bint keep_alive, bytes reason=*)
    cpdef respond(self, Request request, int status, list fields, bytes body, bytes reason, bint streaming,
                  bint close, bint has_length)
    cpdef send(self, bytes chunk)
    cpdef end(self)
    cpdef abort(self)
