# -*- coding: utf-8 -*-
# Copyright: (c) 2026, LiteBoxd platform team
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rtnetlink session: one NETLINK_ROUTE socket, dumps decoded into plain dicts, batched requests.

It speaks the kernel's rtnetlink ABI with ``struct`` and the standard library only. (pyroute2 did
this before; importing it took about 0.2 s, as long as a whole policy_routing run that changes
nothing.) Only what the routing modules read is decoded: links (with VXLAN and GRE details),
addresses, neighbours, routes and rules; only routes and rules are written. What the messages mean is
``routing``'s business.

A decoded message is a dict of its header fields, named as the kernel (and pyroute2) name them
(``family``, ``dst_len``, ``table``, ``proto``, ``scope``, ``type``, ``flags``, ``index``...), plus
``attrs``: ``{'RTA_DST': '10.0.0.0', ...}``. Attributes not listed here are skipped.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import socket
import struct

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # errors without a copy of the request
NETLINK_EXT_ACK = 11  # errors with the kernel's explanation
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP_INTR, NLM_F_DUMP = 0x1, 0x4, 0x10, 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLMSGERR_ATTR_MSG = 1
NLA_TYPE_MASK = 0x3fff
# Requests sent before their acknowledgements are read. Each acknowledgement occupies about 1 KiB of
# the receive buffer (212 KiB by default); a lost one would leave a change unaccounted for.
BATCH = 64

_NLMSGHDR = struct.Struct('=IHHII')
_NLATTR = struct.Struct('=HH')
_ERROR = struct.Struct('=i')
_NEXTHOP = struct.Struct('=HBBi')

# kind: (message type of a dump reply, dump request type, header layout, header field names)
_HEADERS = {
    'link': (16, 18, struct.Struct('=BxHiII'), ('family', 'ifi_type', 'index', 'flags', 'change')),
    'address': (20, 22, struct.Struct('=BBBBI'), ('family', 'prefixlen', 'flags', 'scope', 'index')),
    'route': (24, 26, struct.Struct('=BBBBBBBBI'),
              ('family', 'dst_len', 'src_len', 'tos', 'table', 'proto', 'scope', 'type', 'flags')),
    'neighbour': (28, 30, struct.Struct('=BxxxiHBB'), ('family', 'ifindex', 'state', 'flags', 'type')),
    'rule': (32, 34, struct.Struct('=BBBBBBBBI'),
             ('family', 'dst_len', 'src_len', 'tos', 'table', 'res1', 'res2', 'action', 'flags')),
}
_KINDS = dict((spec[0], kind) for kind, spec in _HEADERS.items())
# kind: {op: (message type, flags besides request and ack)}
_WRITES = {
    'route': {'add': (24, NLM_F_CREATE | NLM_F_EXCL), 'replace': (24, NLM_F_CREATE | NLM_F_REPLACE), 'delete': (25, 0)},
    'rule': {'add': (32, NLM_F_CREATE | NLM_F_EXCL), 'delete': (33, 0)},
}

# Attributes: {number: (name, codec)}
_VXLAN = {1: ('IFLA_VXLAN_ID', 'u32'), 2: ('IFLA_VXLAN_GROUP', 'addr'), 3: ('IFLA_VXLAN_LINK', 'u32'),
          4: ('IFLA_VXLAN_LOCAL', 'addr'), 15: ('IFLA_VXLAN_PORT', 'be16')}
_GRE = {5: ('IFLA_GRE_OKEY', 'be32'), 6: ('IFLA_GRE_LOCAL', 'addr'), 7: ('IFLA_GRE_REMOTE', 'addr'),
        8: ('IFLA_GRE_TTL', 'u8')}
_INFO_DATA = {'vxlan': _VXLAN, 'gre': _GRE}
_ATTRS = {
    'link': {1: ('IFLA_ADDRESS', 'mac'), 3: ('IFLA_IFNAME', 'str'), 4: ('IFLA_MTU', 'u32'),
             18: ('IFLA_LINKINFO', 'linkinfo')},
    'address': {1: ('IFA_ADDRESS', 'addr'), 2: ('IFA_LOCAL', 'addr')},
    'neighbour': {1: ('NDA_DST', 'addr'), 2: ('NDA_LLADDR', 'mac')},
    'route': {1: ('RTA_DST', 'addr'), 4: ('RTA_OIF', 'u32'), 5: ('RTA_GATEWAY', 'addr'), 6: ('RTA_PRIORITY', 'u32'),
              7: ('RTA_PREFSRC', 'addr'), 9: ('RTA_MULTIPATH', 'multipath'), 15: ('RTA_TABLE', 'u32')},
    'rule': {1: ('FRA_DST', 'addr'), 2: ('FRA_SRC', 'addr'), 3: ('FRA_IIFNAME', 'str'), 6: ('FRA_PRIORITY', 'u32'),
             10: ('FRA_FWMARK', 'u32'), 15: ('FRA_TABLE', 'u32'), 16: ('FRA_FWMASK', 'u32'),
             17: ('FRA_OIFNAME', 'str')},
}
_NUMBERS = dict((kind, dict((name, (number, codec)) for number, (name, codec) in table.items()))
                for kind, table in _ATTRS.items())
_NEXTHOP_ATTRS = {5: ('RTA_GATEWAY', 'addr')}


class KernelError(Exception):
    """The kernel refused a request or a dump; ``code`` is the errno."""

    def __init__(self, code, detail=None):
        self.code = code
        text = '%s (%s)' % (os.strerror(code), errno.errorcode.get(code, code))
        super(KernelError, self).__init__(text + (': %s' % detail if detail else ''))


# --------------------------------------------------------------------------- the wire format

def _decode_value(codec, data):
    if codec == 'u32':
        return struct.unpack('=I', data[:4])[0]
    if codec == 'u8':
        return data[0]
    if codec == 'be16':
        return struct.unpack('!H', data[:2])[0]
    if codec == 'be32':
        return struct.unpack('!I', data[:4])[0]
    if codec == 'str':
        return data.split(b'\0', 1)[0].decode('utf-8', 'replace')
    if codec == 'addr':
        return socket.inet_ntop(socket.AF_INET if len(data) == 4 else socket.AF_INET6, data)
    if codec == 'mac':
        return ':'.join('%02x' % byte for byte in data)
    if codec == 'linkinfo':
        info = _decode_attrs(data, 0, len(data), {1: ('IFLA_INFO_KIND', 'str'), 2: ('IFLA_INFO_DATA', 'raw')})
        table = _INFO_DATA.get(info.get('IFLA_INFO_KIND'))
        raw = info.pop('IFLA_INFO_DATA', None)
        if table and raw is not None:
            info['IFLA_INFO_DATA'] = _decode_attrs(raw, 0, len(raw), table)
        return info
    if codec == 'multipath':
        hops, offset = [], 0
        while offset + _NEXTHOP.size <= len(data):
            length, flags, _hops, oif = _NEXTHOP.unpack_from(data, offset)
            if length < _NEXTHOP.size:
                break
            hops.append({'flags': flags, 'oif': oif,
                         'attrs': _decode_attrs(data, offset + _NEXTHOP.size, offset + length, _NEXTHOP_ATTRS)})
            offset += (length + 3) & ~3
        return hops
    return data


def _decode_attrs(data, offset, end, table):
    attrs = {}
    while offset + _NLATTR.size <= end:
        length, number = _NLATTR.unpack_from(data, offset)
        if length < _NLATTR.size:
            break
        spec = table.get(number & NLA_TYPE_MASK)
        if spec is not None:
            attrs[spec[0]] = _decode_value(spec[1], data[offset + _NLATTR.size:offset + length])
        offset += (length + 3) & ~3
    return attrs


def decode(data):
    """The messages in ``data`` (one datagram, or one message as ``ip monitor`` would hand it over)
    → [(nlmsghdr fields, decoded message or None, raw payload)]."""
    messages, offset = [], 0
    while offset + _NLMSGHDR.size <= len(data):
        length, msg_type, flags, seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            break
        body = offset + _NLMSGHDR.size
        kind = _KINDS.get(msg_type)
        message = None
        if kind is not None:
            layout, names = _HEADERS[kind][2], _HEADERS[kind][3]
            message = dict(zip(names, layout.unpack_from(data, body)))
            message['attrs'] = _decode_attrs(data, body + layout.size, offset + length, _ATTRS[kind])
        messages.append(((msg_type, flags, seq), message, data[body:offset + length]))
        offset += (length + 3) & ~3
    return messages


def _encode_value(codec, value):
    if codec == 'u32':
        return struct.pack('=I', value)
    if codec == 'str':
        return value.encode('utf-8') + b'\0'
    if codec == 'addr':
        return socket.inet_pton(socket.AF_INET6 if ':' in value else socket.AF_INET, value)
    raise ValueError('cannot encode %s' % codec)


def encode(kind, op, header, attrs, seq):
    """One request: ``kind`` route or rule, ``op`` add, replace or delete; ``header`` the header fields
    (missing ones are 0), ``attrs`` [(name, value)]."""
    msg_type, flags = _WRITES[kind][op]
    layout, names = _HEADERS[kind][2], _HEADERS[kind][3]
    parts = [layout.pack(*[header.get(name, 0) for name in names])]
    for name, value in attrs:
        number, codec = _NUMBERS[kind][name]
        payload = _encode_value(codec, value)
        parts.append(_NLATTR.pack(_NLATTR.size + len(payload), number) + payload + b'\0' * (-len(payload) % 4))
    body = b''.join(parts)
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), msg_type, flags | NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def _error(payload, flags):
    """NLMSG_ERROR payload → (errno, the kernel's explanation or None); errno 0 is an ack."""
    code = -_ERROR.unpack_from(payload, 0)[0]
    detail = None
    if code and flags & NLM_F_ACK_TLVS:
        offset = _ERROR.size + _NLMSGHDR.size
        if not flags & NLM_F_CAPPED:  # the request was copied in full before the explanation
            offset = _ERROR.size + _NLMSGHDR.unpack_from(payload, _ERROR.size)[0]
        detail = _decode_attrs(payload, offset, len(payload), {NLMSGERR_ATTR_MSG: ('msg', 'str')}).get('msg')
    return code, detail


# --------------------------------------------------------------------------- the socket

class Session:
    """A NETLINK_ROUTE socket in the network namespace the module runs in. Use as a context manager."""

    def __init__(self):
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        for option in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
            try:
                self._sock.setsockopt(SOL_NETLINK, option, 1)
            except OSError:  # older kernels: plain errno only
                pass
        self._sock.bind((0, 0))
        self._seq = 0
        self._links = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._sock.close()

    def _next_seq(self):
        self._seq += 1
        return self._seq

    def dump(self, kind, family=socket.AF_UNSPEC):
        """Every object of ``kind`` (link, address, neighbour, route, rule) of ``family`` (0: all).
        A dump the kernel marks inconsistent (the state changed meanwhile) is taken again."""
        for _attempt in range(5):
            seq = self._next_seq()
            layout = _HEADERS[kind][2]
            header = struct.pack('=B', family) + b'\0' * (layout.size - 1)
            self._sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(header), _HEADERS[kind][1],
                                           NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + header)
            messages, interrupted, done = [], False, False
            while not done:
                for (msg_type, flags, msg_seq), message, payload in decode(self._sock.recv(1 << 17)):
                    if msg_seq != seq:
                        continue
                    interrupted = interrupted or bool(flags & NLM_F_DUMP_INTR)
                    if msg_type == NLMSG_ERROR:
                        raise KernelError(*_error(payload, flags))
                    done = msg_type == NLMSG_DONE
                    if done:
                        break
                    if message is not None:
                        messages.append(message)
            if not interrupted:
                return messages
        raise KernelError(errno.EBUSY, 'the %s table kept changing while it was read' % kind)

    def links(self):
        """Link messages, read once per session."""
        if self._links is None:
            self._links = self.dump('link')
        return self._links

    def ifnames(self):
        """``{ifindex: name}``."""
        return dict((link['index'], link['attrs'].get('IFLA_IFNAME')) for link in self.links())

    def ifindex(self):
        """``{name: ifindex}``."""
        return dict((name, index) for index, name in self.ifnames().items())

    def change(self, requests):
        """Send ``requests`` [(kind, op, header, attrs)] in batches; return, for each, None or the
        KernelError it got. The kernel handles them in order and acknowledges each one."""
        results = []
        for start in range(0, len(requests), BATCH):
            chunk = requests[start:start + BATCH]
            first = self._seq + 1
            self._sock.send(b''.join(encode(*request, seq=self._next_seq()) for request in chunk))
            pending = dict((seq, None) for seq in range(first, first + len(chunk)))
            answered = set()
            while len(answered) < len(chunk):
                for (msg_type, flags, seq), _message, payload in decode(self._sock.recv(1 << 16)):
                    if msg_type == NLMSG_ERROR and seq in pending and seq not in answered:
                        code, detail = _error(payload, flags)
                        pending[seq] = KernelError(code, detail) if code else None
                        answered.add(seq)
            results.extend(pending[seq] for seq in range(first, first + len(chunk)))
        return results
