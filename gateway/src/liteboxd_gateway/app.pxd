# Declarations that let Cython compile app.py into typed classes (see gateway/README.md).
cimport cython

from .http1 cimport ClientConnection, Request
from .proxy cimport Forward, HttpProxy


cdef class Exchange:
    cdef public str request_id
    cdef public str form
    cdef public str sandbox_id
    cdef public str target
    cdef public int status
    cdef public object error
    cdef public Py_ssize_t bytes


cdef class HttpExchange(Exchange):
    cdef public Gateway gateway
    cdef public ClientConnection client
    cdef public Request request
    cdef public double started
    cdef public Forward forward
    cdef public bint holding

    cpdef cancel(self)


cdef class Admitted:
    cdef public object route
    cdef public str pod_name
    cdef public str pod_ip
    cdef public str target
    cdef public object cookies


cdef class Gateway:
    cdef public object config
    cdef public object cache
    cdef public object metrics
    cdef public object limits
    cdef public bint draining
    cdef public set relays
    cdef public object websocket_upstream
    cdef public HttpProxy proxy
    cdef public object offload
    cdef public str _request_id_prefix
    cdef public object _request_ids

    cpdef _exchange(self, headers, kind=*)
    cpdef _account(self, Exchange exchange, str method, remote, double elapsed)
    cpdef _reject(self, Exchange exchange, int status, str reason, message=*)
    cpdef Admitted _admit(self, str method, str raw_path, headers, Exchange exchange, bint websocket)
    @cython.locals(exchange=HttpExchange, admitted=Admitted, forward=Forward)
    cpdef serve(self, ClientConnection client, Request request)
    cpdef _answer_error(self, ClientConnection client, Request request, Exchange exchange, int status, str message,
                        bint close=*)
    @cython.locals(exchange=HttpExchange)
    cpdef _forwarded(self, Forward forward)
    cpdef abandon(self, HttpExchange exchange)
    cpdef _release(self, HttpExchange exchange)
    cpdef _account_http(self, HttpExchange exchange)
    cpdef _account_written(self, HttpExchange exchange)
    cpdef _served(self, HttpExchange exchange)
