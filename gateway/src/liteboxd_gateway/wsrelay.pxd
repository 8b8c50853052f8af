# Declarations that let Cython compile wsrelay.py into typed classes (see gateway/README.md).
cimport cython

cdef class Relay

cdef int NORMAL, GOING_AWAY, PROTOCOL_ERROR, INVALID_TEXT, MESSAGE_TOO_BIG, INTERNAL_ERROR
cdef int CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG
cdef double CLOSE_TIMEOUT
cdef Py_ssize_t HOLD_LIMIT
cdef int WAITING, OPEN, CLOSING, CLOSED
cdef int PEER_FULL, HOLDING, OFFLOADED


cpdef int sendable_close_code(object code, int vanished)
cpdef bytes apply_mask(bytes key, bytes payload)
cpdef bytes frame(int first, bytes payload, bint masked)
cpdef bytes frame_payload(bytes data, Py_ssize_t pos, Py_ssize_t head, Py_ssize_t size, int masked)


cdef class Side:
    cdef public bint masks
    cdef public object transport
    cdef public Relay relay
    cdef public Side peer
    cdef public int state
    cdef public bint lost
    cdef public Py_ssize_t max_message_size
    cdef public list _held
    cdef public Py_ssize_t _held_size
    cdef public Py_ssize_t _needed
    cdef public int _opcode
    cdef public Py_ssize_t _message_size
    cdef public int _pauses
    cdef public bint _close_sent

    cpdef data_received(self, data)
    cpdef write(self, bytes data)
    @cython.locals(end=Py_ssize_t, pos=Py_ssize_t, start=Py_ssize_t, needed=Py_ssize_t, first=int, second=int,
                   opcode=int, size=Py_ssize_t, head=Py_ssize_t, masked=int, error=int, completed=bint,
                   peer_masks=bint)
    cpdef read_frames(self, bytes data)
    cpdef write_to_peer(self, bytes data, Py_ssize_t start, Py_ssize_t stop)
    @cython.locals(opcode=int)
    cpdef int refusal(self, int first, int second, Py_ssize_t size)


cdef class UpstreamSide(Side):
    cdef public object protocol


cdef class ClientSide(Side):
    cdef public object handler
    cdef public object _close_timer


cdef class Relay:
    cdef public object loop
    cdef public Py_ssize_t max_message_size
    cdef public double idle_timeout
    cdef public double max_lifetime
    cdef public ClientSide client
    cdef public UpstreamSide upstream
    cdef public bint started
    cdef public str outcome
    cdef public double last_activity
    cdef public object done
    cdef public double _ends
    cdef public object _timer
    cdef public tuple _fds
    cdef public object offload
    cdef public unsigned long long handle
    cdef public bint _reclaiming

    cpdef message_completed(self)
