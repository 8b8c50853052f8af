# Declarations that let Cython compile proxy.py into typed classes (see gateway/README.md).
from .http1 cimport ClientConnection, Request
from .writes cimport HeldWriter, HeldWrites


cdef class Forward


cdef class UpstreamConnection(HeldWriter):
    cdef public object loop
    cdef public tuple address
    cdef public bint closed
    cdef public double idle_since
    cdef public object parser
    cdef public Forward forward
    cdef public bint _head_only
    cdef public bytes _reason
    cdef public list _fields
    cdef public bint head_received
    cdef public bint until_close
    cdef public bint complete
    cdef public bint reusable
    cdef public object _drain_waiter
    cdef public bint _writing_paused

    cpdef begin(self, Forward forward, bytes data, bint head_only)
    cpdef write(self, bytes data)
    cpdef close(self)
    cpdef _fail(self, error)
    cpdef _end_of_stream(self)


cdef class UpstreamPool:
    cdef public object config
    cdef public object metrics
    cdef public object loop
    cdef public HeldWrites held_writes
    cdef public dict idle
    cdef public object _sweeper

    cpdef UpstreamConnection take_idle(self, tuple address)
    cpdef release(self, UpstreamConnection connection)


cdef class Forward:
    cdef public HttpProxy proxy
    cdef public ClientConnection client
    cdef public Request request
    cdef public tuple address
    cdef public bytes data
    cdef public bint streaming
    cdef public bint chunked
    cdef public str request_id
    cdef public object done
    cdef public UpstreamConnection connection
    cdef public object task
    cdef public int status
    cdef public object error
    cdef public bytes _reason
    cdef public list _fields
    cdef public bint _has_length
    cdef public list _chunks
    cdef public bint _answering
    cdef public bint _finished
    cdef public bint _body_sent
    cdef public object _timer
    cdef public double _last_read
    cdef public bint _paused

    cpdef start(self)
    cpdef cancel(self)
    cpdef _send(self, UpstreamConnection connection)
    cpdef _arm_read_timeout(self)
    cpdef head(self, int status, bytes reason, list fields, bint has_length)
    cpdef body(self, bytes chunk)
    cpdef parsed(self)
    cpdef failed(self, error)
    cpdef _finish(self, error)
    cpdef _stop(self, bint reusable)


cdef class HttpProxy:
    cdef public object config
    cdef public object metrics
    cdef public object loop
    cdef public HeldWrites held_writes
    cdef public UpstreamPool pool
