# Declarations that let Cython compile writes.py into typed classes (see gateway/README.md);
# the .py stays the one implementation, and runs as it is where nothing was compiled.

cdef class HeldWrites:
    cdef public object loop
    cdef public Py_ssize_t active
    cdef public list _holding
    cdef public list _after
    cdef public bint _scheduled

    cpdef bint hold(self, HeldWriter connection)
    cpdef after(self, object callback, object argument)
    cpdef _schedule(self)
    cpdef flush_held(self)


cdef class HeldWriter:
    cdef public HeldWrites held_writes
    cdef public object transport
    cdef public list _held

    cpdef _write(self, bytes data)
    cpdef write_held(self)
    cpdef _drop_held(self)
    cpdef bint _can_write(self)
