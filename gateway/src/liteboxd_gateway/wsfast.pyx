# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The WebSocket relay's fast path: a thread that carries data frames between the two sockets of a
session without the event loop, the interpreter or the GIL (compiled builds only; wsrelay.Offload).

On the event loop, uvloop's and CPython's cost around each read kept a 64-byte round trip through
the gateway at 20-26 us of CPU against nginx's 16-20 (gateway/README.md). Here one thread per
worker waits in epoll on the sockets of every offloaded session, reads what arrived, and writes on at
once every frame that wsrelay would forward as it came: whole, a data frame (text, binary,
continuation) without reserved bits, masked the way the other side expects (masked from the client,
unmasked from the sandbox), in fragment order and under the message size limit. It updates what
wsrelay keeps for those frames (the fragmented message under way, its size, the time of the last
complete message) and nothing else.

Anything else is wsrelay's: a control frame, a frame masked the other way, a frame that breaks a rule,
a frame not yet whole, the end or an error of a connection, a write the socket would not take whole.
The session is then handed back ("ejected"): both sockets leave this thread's epoll set, the bytes read
and not forwarded (from the frame in question on) and those forwarded and not yet written are kept,
and the event loop is woken through an eventfd. wsrelay takes them back (``reclaim``) with the
fragment state, writes what was pending and reads the rest as if it had just arrived, so every rule
and every close stays written once, in wsrelay. Nothing is decided here that wsrelay could decide
differently; a session that goes back to the fast path after, say, a ping, is in the state wsrelay
left it in.

The event loop and this thread share the slots under one mutex, held by the thread while it works
through a batch of events and by the loop for each call (never across a wait); the thread never takes
the GIL. A slot is named by its index and a generation, so an event already returned by epoll for a
session handed back since is recognised as stale and dropped.
"""
from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdint cimport uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memset
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec
from posix.unistd cimport close, read, write

cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        uint64_t u64
    cdef struct epoll_event:
        unsigned int events
        epoll_data_t data
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)
    enum:
        EPOLLIN
        EPOLLERR
        EPOLLHUP
        EPOLL_CTL_ADD
        EPOLL_CTL_DEL
        EPOLL_CLOEXEC

cdef extern from "<sys/eventfd.h>" nogil:
    int eventfd(unsigned int initval, int flags)
    enum:
        EFD_CLOEXEC
        EFD_NONBLOCK

cdef extern from "<sys/socket.h>" nogil:
    ssize_t recv(int fd, void *buf, size_t size, int flags)
    ssize_t send(int fd, const void *buf, size_t size, int flags)
    enum:
        MSG_NOSIGNAL

cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    int pthread_mutex_init(pthread_mutex_t *mutex, void *attributes)
    int pthread_mutex_destroy(pthread_mutex_t *mutex)
    int pthread_mutex_lock(pthread_mutex_t *mutex)
    int pthread_mutex_unlock(pthread_mutex_t *mutex)

cdef enum:
    READ_SIZE = 262144  # bytes read from a socket at once
    BATCH = 64  # epoll events taken at once
    # Slot states.
    FREE = 0
    ATTACHED = 1
    EJECTED = 2
    # Sides of a session, in the order wsrelay passes them: the client's, the sandbox's.
    CLIENT = 0
    UPSTREAM = 1
cdef uint64_t STOP_TOKEN = 0xFFFFFFFFFFFFFFFF  # the epoll data of the eventfd that stops the thread
cdef uint64_t INDEX_MASK = 0xFFFFFFFF  # a handle is generation << 32 | index
cdef unsigned int MAX_GENERATION = 0x3FFFFFFF
LOST = -2  # reclaim's side when bytes to hand back were lost for want of memory


cdef struct Half:
    int fd
    int opcode  # the opcode of the fragmented message under way, 0 between messages (wsrelay.Side._opcode)
    Py_ssize_t message_size  # that message's payload bytes so far (wsrelay.Side._message_size)


cdef struct Slot:
    unsigned int generation
    int state
    Half half[2]
    Py_ssize_t max_message_size
    double last_activity  # CLOCK_MONOTONIC seconds of the last complete message, as the loop's time()
    int ejected_side  # the side whose read ended the fast path, -1 when none (the loop took the session back)
    int lost  # bytes to hand back could not be kept (no memory): the session must end
    char *rest  # bytes read from that side and not forwarded, from the first frame left to wsrelay
    Py_ssize_t rest_size
    char *pending  # bytes forwarded from that side the other socket has not taken yet
    Py_ssize_t pending_size


cdef inline double monotonic() noexcept nogil:
    cdef timespec now
    clock_gettime(CLOCK_MONOTONIC, &now)
    return now.tv_sec + now.tv_nsec * 1e-9


cdef char *kept(const char *data, Py_ssize_t size, Slot *slot) noexcept nogil:
    """A heap copy of ``size`` bytes at ``data`` (NULL for none); without memory, NULL and ``slot`` lost."""
    cdef char *copy
    if not size:
        return NULL
    copy = <char *>malloc(size)
    if copy is NULL:
        slot.lost = 1
    else:
        memcpy(copy, data, size)
    return copy


cdef inline uint64_t handle_of(unsigned int generation, Py_ssize_t index) noexcept nogil:
    return (<uint64_t>generation << 32) | <uint64_t>index


cdef class Relayer:
    """The fast path of one event loop: its thread (``run``, started by wsrelay.Offload), its sessions
    (``attach``, ``reclaim``) and the eventfd (``notify_fd``) the loop watches for sessions handed back."""

    cdef pthread_mutex_t lock
    cdef int epoll_fd
    cdef int stop_fd
    cdef readonly int notify_fd
    cdef Slot *slots
    cdef Py_ssize_t capacity
    cdef Py_ssize_t *free_slots  # indexes of free slots, a stack
    cdef Py_ssize_t free_count
    cdef uint64_t *ejected  # handles of sessions handed back since the loop last asked
    cdef Py_ssize_t ejected_count
    cdef Py_ssize_t ejected_capacity
    cdef char *buffer  # the thread's read buffer
    # Counts for tests and the bench: sessions attached, handed back by the thread, data frames carried.
    cdef readonly unsigned long long attaches
    cdef readonly unsigned long long ejections
    cdef readonly unsigned long long frames

    def __cinit__(self):
        self.epoll_fd = self.stop_fd = self.notify_fd = -1
        pthread_mutex_init(&self.lock, NULL)
        self.buffer = <char *>malloc(READ_SIZE)
        if self.buffer is NULL:
            raise MemoryError()
        self.epoll_fd = epoll_create1(EPOLL_CLOEXEC)
        self.stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)
        self.notify_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)
        if self.epoll_fd < 0 or self.stop_fd < 0 or self.notify_fd < 0:
            raise OSError(errno, "cannot make the WebSocket relay's epoll set and eventfds")
        cdef epoll_event event
        event.events = EPOLLIN
        event.data.u64 = STOP_TOKEN
        if epoll_ctl(self.epoll_fd, EPOLL_CTL_ADD, self.stop_fd, &event) < 0:
            raise OSError(errno, "cannot watch the WebSocket relay's stop eventfd")

    def __dealloc__(self):
        cdef Py_ssize_t index
        for index in range(self.capacity):
            free(self.slots[index].rest)
            free(self.slots[index].pending)
        free(self.slots)
        free(self.free_slots)
        free(self.ejected)
        free(self.buffer)
        for fd in (self.epoll_fd, self.stop_fd, self.notify_fd):
            if fd >= 0:
                close(fd)
        pthread_mutex_destroy(&self.lock)

    # -- the event loop's side (the GIL held; the mutex taken without it) ---------------------
    def attach(self, int client_fd, int upstream_fd, Py_ssize_t max_message_size, int client_opcode,
               Py_ssize_t client_message_size, int upstream_opcode, Py_ssize_t upstream_message_size,
               double last_activity):
        """Carry a session's data frames from now on; returns its handle. The caller stopped reading
        and writing both sockets and has nothing held or unwritten for them."""
        cdef Py_ssize_t index
        cdef Slot *slot
        cdef epoll_event event
        cdef int failed = 0
        cdef uint64_t handle = 0
        with nogil:
            pthread_mutex_lock(&self.lock)
            index = self._free_slot()
            if index >= 0:
                slot = &self.slots[index]
                slot.state = ATTACHED
                slot.max_message_size = max_message_size
                slot.last_activity = last_activity
                slot.ejected_side = -1
                slot.half[CLIENT].fd = client_fd
                slot.half[CLIENT].opcode = client_opcode
                slot.half[CLIENT].message_size = client_message_size
                slot.half[UPSTREAM].fd = upstream_fd
                slot.half[UPSTREAM].opcode = upstream_opcode
                slot.half[UPSTREAM].message_size = upstream_message_size
                event.events = EPOLLIN
                event.data.u64 = handle_of(slot.generation, index) << 1 | CLIENT
                if epoll_ctl(self.epoll_fd, EPOLL_CTL_ADD, client_fd, &event) < 0:
                    failed = errno
                else:
                    event.data.u64 = handle_of(slot.generation, index) << 1 | UPSTREAM
                    if epoll_ctl(self.epoll_fd, EPOLL_CTL_ADD, upstream_fd, &event) < 0:
                        failed = errno
                        epoll_ctl(self.epoll_fd, EPOLL_CTL_DEL, client_fd, NULL)
                if failed:
                    self._release(index)
                else:
                    handle = handle_of(slot.generation, index)
                    self.attaches += 1
            pthread_mutex_unlock(&self.lock)
        if index < 0:
            raise MemoryError()
        if failed:
            raise OSError(failed, "cannot hand a WebSocket session to the relay thread")
        return handle

    def reclaim(self, uint64_t handle):
        """Take a session back (whether the thread handed it back or not); returns (side whose
        read ended the fast path, -1 for none or LOST, bytes read from it and not forwarded, bytes forwarded
        from it not yet written, client's opcode and message size, sandbox's, last activity),
        or None for a handle that is not attached."""
        cdef Slot *slot
        cdef Slot taken
        cdef int found = 0
        with nogil:
            pthread_mutex_lock(&self.lock)
            slot = self._slot_of(handle)
            if slot is not NULL:
                found = 1
                if slot.state == ATTACHED:
                    self._unwatch(slot)
                taken = slot[0]
                slot.rest = slot.pending = NULL
                slot.rest_size = slot.pending_size = 0
                self._release(<Py_ssize_t>(handle & INDEX_MASK))
            pthread_mutex_unlock(&self.lock)
        if not found:
            return None
        try:
            return (LOST if taken.lost else taken.ejected_side, taken.rest[:taken.rest_size] if taken.rest_size else b"",
                    taken.pending[:taken.pending_size] if taken.pending_size else b"",
                    taken.half[CLIENT].opcode, taken.half[CLIENT].message_size,
                    taken.half[UPSTREAM].opcode, taken.half[UPSTREAM].message_size, taken.last_activity)
        finally:
            free(taken.rest)
            free(taken.pending)

    def handed_back(self):
        """The handles of the sessions the thread handed back since the last call (``notify_fd`` read)."""
        cdef uint64_t count
        cdef Py_ssize_t index
        read(self.notify_fd, &count, sizeof(count))
        handles = []
        with nogil:
            pthread_mutex_lock(&self.lock)
        try:
            for index in range(self.ejected_count):
                handles.append(self.ejected[index])
            self.ejected_count = 0
        finally:
            pthread_mutex_unlock(&self.lock)
        return handles

    def last_activity(self, uint64_t handle) -> float:
        """The time of the session's last complete message, as the thread saw it (0 if not attached)."""
        cdef Slot *slot
        cdef double seen = 0.0
        with nogil:
            pthread_mutex_lock(&self.lock)
            slot = self._slot_of(handle)
            if slot is not NULL:
                seen = slot.last_activity
            pthread_mutex_unlock(&self.lock)
        return seen

    def stop(self):
        """End the thread (after the batch it is working on)."""
        cdef uint64_t one = 1
        write(self.stop_fd, &one, sizeof(one))

    def run(self):
        """The thread's body: relay until ``stop``."""
        with nogil:
            self._run()

    # -- slots (the mutex held) ---------------------------------------------------------------
    cdef Slot *_slot_of(self, uint64_t handle) noexcept nogil:
        """The slot ``handle`` names, or NULL when it was released since (the handle is stale)."""
        cdef Py_ssize_t index = <Py_ssize_t>(handle & INDEX_MASK)
        if index >= self.capacity or self.slots[index].state == FREE \
                or self.slots[index].generation != <unsigned int>(handle >> 32):
            return NULL
        return &self.slots[index]

    cdef Py_ssize_t _free_slot(self) noexcept nogil:
        cdef Py_ssize_t grown, index
        cdef Slot *slots
        cdef Py_ssize_t *free_slots
        if not self.free_count:
            grown = self.capacity * 2 if self.capacity else 64
            slots = <Slot *>realloc(self.slots, grown * sizeof(Slot))
            if slots is NULL:
                return -1
            self.slots = slots
            free_slots = <Py_ssize_t *>realloc(self.free_slots, grown * sizeof(Py_ssize_t))
            if free_slots is NULL:
                return -1
            self.free_slots = free_slots
            memset(&self.slots[self.capacity], 0, (grown - self.capacity) * sizeof(Slot))
            for index in range(grown - 1, self.capacity - 1, -1):
                self.slots[index].generation = 1  # a handle is never 0, wsrelay's "not attached"
                self.free_slots[self.free_count] = index
                self.free_count += 1
            self.capacity = grown
        self.free_count -= 1
        return self.free_slots[self.free_count]

    cdef void _release(self, Py_ssize_t index) noexcept nogil:
        cdef Slot *slot = &self.slots[index]
        free(slot.rest)
        free(slot.pending)
        slot.rest = slot.pending = NULL
        slot.rest_size = slot.pending_size = 0
        slot.state = FREE
        slot.lost = 0
        # Never 0 (see _free_slot); under 2**30, so that events (handle << 1 | side) stay under STOP_TOKEN.
        slot.generation = slot.generation % MAX_GENERATION + 1
        self.free_slots[self.free_count] = index
        self.free_count += 1

    cdef void _unwatch(self, Slot *slot) noexcept nogil:
        epoll_ctl(self.epoll_fd, EPOLL_CTL_DEL, slot.half[CLIENT].fd, NULL)
        epoll_ctl(self.epoll_fd, EPOLL_CTL_DEL, slot.half[UPSTREAM].fd, NULL)

    cdef void _eject(self, Py_ssize_t index, int side, const char *rest, Py_ssize_t rest_size,
                     const char *pending, Py_ssize_t pending_size) noexcept nogil:
        """Hand the session back with what the loop must finish. Without memory for those bytes the
        session is marked lost (wsrelay ends it); without memory to list it, the loop learns of it at
        its next timer (idle timeout or lifetime), which takes it back."""
        cdef Slot *slot = &self.slots[index]
        cdef uint64_t *ejected
        self._unwatch(slot)
        slot.state = EJECTED
        slot.ejected_side = side
        slot.rest = kept(rest, rest_size, slot)
        slot.rest_size = rest_size if slot.rest is not NULL else 0
        slot.pending = kept(pending, pending_size, slot)
        slot.pending_size = pending_size if slot.pending is not NULL else 0
        if self.ejected_count == self.ejected_capacity:
            ejected = <uint64_t *>realloc(self.ejected, (self.ejected_capacity * 2 + 16) * sizeof(uint64_t))
            if ejected is NULL:
                return
            self.ejected = ejected
            self.ejected_capacity = self.ejected_capacity * 2 + 16
        self.ejected[self.ejected_count] = handle_of(slot.generation, index)
        self.ejected_count += 1
        self.ejections += 1

    # -- the thread ---------------------------------------------------------------------------
    cdef void _run(self) noexcept nogil:
        cdef epoll_event events[BATCH]
        cdef int count, number
        cdef uint64_t data, one = 1
        cdef Slot *slot
        cdef int notify, stopping = 0
        while not stopping:
            count = epoll_wait(self.epoll_fd, events, BATCH, -1)
            if count < 0:
                if errno == EINTR:
                    continue
                break
            notify = 0
            pthread_mutex_lock(&self.lock)
            for number in range(count):
                data = events[number].data.u64
                if data == STOP_TOKEN:
                    stopping = 1
                    continue
                slot = self._slot_of(data >> 1)
                if slot is NULL or slot.state != ATTACHED:
                    continue  # handed back since epoll returned the event
                notify |= self._readable(<Py_ssize_t>((data >> 1) & INDEX_MASK), <int>(data & 1),
                                         events[number].events)
            pthread_mutex_unlock(&self.lock)
            if notify:
                write(self.notify_fd, &one, sizeof(one))

    cdef int _readable(self, Py_ssize_t index, int side, unsigned int what) noexcept nogil:
        """Relay what ``side`` of the session sent; 1 when the session was handed back."""
        cdef Slot *slot = &self.slots[index]
        cdef Half *half = &slot.half[side]
        cdef int peer_fd = slot.half[1 - side].fd
        cdef char *data = self.buffer
        cdef ssize_t size, written
        cdef Py_ssize_t pos = 0, head, length, forwarded
        cdef unsigned char first, second
        cdef int opcode, masked, completed = 0
        cdef uint64_t long_length
        cdef int byte
        if what & EPOLLERR or not what & EPOLLIN:
            self._eject(index, side, NULL, 0, NULL, 0)  # the loop's transport reads the error or end itself
            return 1
        size = recv(half.fd, data, READ_SIZE, 0)
        if size < 0 and (errno == EAGAIN or errno == EINTR):
            return 0
        if size <= 0:
            self._eject(index, side, NULL, 0, NULL, 0)
            return 1
        while size - pos >= 2:
            first = <unsigned char>data[pos]
            second = <unsigned char>data[pos + 1]
            opcode = first & 0x0F
            if first & 0x70 or opcode > 0x2:
                break  # a reserved bit, a control frame or an unknown opcode: wsrelay's
            masked = (second & 0x80) != 0
            if masked != (side == CLIENT):
                break  # forwarded unchanged only masked from the client, unmasked from the sandbox
            length = second & 0x7F
            head = 2 + (4 if masked else 0)
            if length == 126:
                head += 2
                if size - pos < head:
                    break
                length = (<unsigned char>data[pos + 2]) << 8 | <unsigned char>data[pos + 3]
            elif length == 127:
                head += 8
                if size - pos < head:
                    break
                long_length = 0
                for byte in range(2, 10):
                    long_length = long_length << 8 | <unsigned char>data[pos + byte]
                if long_length >= <uint64_t>slot.max_message_size:
                    break
                length = <Py_ssize_t>long_length
            if length >= slot.max_message_size - half.message_size:
                break
            if (opcode == 0) != (half.opcode != 0):
                break  # a continuation with no message under way, or a new message inside one
            if size - pos < head + length:
                break  # not whole yet: wsrelay holds it
            if first & 0x80:
                half.opcode = 0
                half.message_size = 0
                completed = 1
            else:
                if opcode:
                    half.opcode = opcode
                half.message_size += length
            pos += head + length
            self.frames += 1
        forwarded = 0
        while forwarded < pos:
            written = send(peer_fd, data + forwarded, pos - forwarded, MSG_NOSIGNAL)
            if written < 0:
                if errno == EINTR:
                    continue
                break  # full (EAGAIN) or failed: the loop's transport writes the rest, or reports the error
            forwarded += written
        if completed:
            slot.last_activity = monotonic()
        if pos < size or forwarded < pos:
            self._eject(index, side, data + pos, size - pos, data + forwarded, pos - forwarded)
            return 1
        return 0
