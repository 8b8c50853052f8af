# -*- coding: utf-8 -*-
# Copyright: (c) 2026, LiteBoxd platform team
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host routing as one model, used by policy_routing and cube_router: tables, rules and routes.

* ``Table``, ``Route`` and ``Rule`` are value types. A route is identified as the kernel identifies it
  (``Route.key``: family, table, destination, metric); a rule by its priority and selectors
  (``Rule.selector``). ``SpecError`` is the one error for bad input; it names the option.
* ``normalize_route`` / ``normalize_rule`` read user specs (netaddr for every address);
  ``route_from_msg`` / ``rule_from_msg`` read the messages a ``netlink.Session`` dumps.
* ``route_text`` / ``rule_text`` render both in ``ip`` syntax: result and diff text, the lines of
  cube_router's script, and (``batch_lines``) the boot-time ``ip -batch`` file policy_routing writes.
* ``plan_routes`` / ``plan_rules`` / ``plan_files`` compare the wanted with the current state;
  ``Changes.apply`` makes the change in batched netlink requests through an undo ``Journal``, so a
  change the kernel refuses rolls back everything the run did before it.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import socket
import tempfile
from collections import namedtuple

try:
    import netaddr
    NETADDR_IMPORT_ERROR = None
except ImportError as exc:  # the modules report missing_required_lib
    netaddr = None
    NETADDR_IMPORT_ERROR = exc

FAMILIES = {'ipv4': socket.AF_INET, 'ipv6': socket.AF_INET6}
FAMILY_NAMES = dict((number, name) for name, number in FAMILIES.items())

RT_TABLES_DIR = '/etc/iproute2/rt_tables.d'
# iproute2 reads the distribution file first, then the admin's; later entries win.
RT_TABLES_FILES = ('/usr/share/iproute2/rt_tables', '/etc/iproute2/rt_tables')
BUILTIN_TABLES = {'default': 253, 'main': 254, 'local': 255}
BUILTIN_TABLE_NAMES = dict((number, name) for name, number in BUILTIN_TABLES.items())
MAIN_TABLE = 254
MAX_TABLE_ID = 2 ** 32 - 1
# The 8-bit table field of route and rule headers says "see the 32-bit attribute" with this value.
RT_TABLE_COMPAT = 252

ROUTE_TYPES = {
    'unicast': 1, 'local': 2, 'broadcast': 3, 'anycast': 4, 'multicast': 5,
    'blackhole': 6, 'unreachable': 7, 'prohibit': 8, 'throw': 9, 'nat': 10,
}
ROUTE_TYPE_NAMES = dict((number, name) for name, number in ROUTE_TYPES.items())
# Route types the modules may declare; the others are the kernel's own.
DECLARABLE_ROUTE_TYPES = ('unicast', 'unreachable', 'blackhole', 'throw', 'prohibit')
SCOPES = {'global': 0, 'site': 200, 'link': 253, 'host': 254, 'nowhere': 255}
SCOPE_NAMES = dict((number, name) for name, number in SCOPES.items())
RULE_ACTIONS = {'lookup': 1, 'goto': 2, 'nop': 3, 'blackhole': 6, 'unreachable': 7, 'prohibit': 8}
RULE_ACTION_NAMES = dict((number, name) for name, number in RULE_ACTIONS.items())
DECLARABLE_RULE_ACTIONS = ('lookup', 'unreachable', 'blackhole', 'prohibit')
PROTOCOLS = {'kernel': 2, 'boot': 3, 'static': 4}
PROTOCOL_NAMES = dict((number, name) for name, number in PROTOCOLS.items())
PROTO_KERNEL = PROTOCOLS['kernel']
# What policy_routing installs its routes with, so the boot-time file re-creates the same routes.
PROTO_STATIC = PROTOCOLS['static']
RTNH_F_ONLINK = 0x4
RTM_F_CLONED = 0x200
FIB_RULE_INVERT = 0x2
IPV6_DEFAULT_METRIC = 1024
IFNAME_RE = re.compile(r'^[A-Za-z0-9_.:+-]{1,15}$')
_TABLE_NAME_RE = re.compile(r'^[A-Za-z0-9_.-]{1,63}$')


class SpecError(ValueError):
    """Bad input, found before anything changes. ``option`` names the option (and item) at fault;
    the message starts with it."""

    def __init__(self, option, message):
        self.option = option
        super(SpecError, self).__init__(message if message.startswith(option) else '%s: %s' % (option, message))


# --------------------------------------------------------------------------- addresses (netaddr)

_NETWORKS = {}


def _network(text):
    """``text`` → (family, 'addr/len', host bits set); cached, as the same gateways and prefixes
    repeat across many routes. Raises ValueError."""
    found = _NETWORKS.get(text)
    if found is None:
        addr_text, sep, plen_text = text.partition('/')
        try:
            # The address strictly (INET_PTON): older netaddr would read "10.1" as 10.1.0.0.
            addr = netaddr.IPAddress(addr_text, flags=netaddr.INET_PTON)
        except (netaddr.AddrFormatError, ValueError, TypeError):
            raise ValueError(text)
        bits = 32 if addr.version == 4 else 128
        if sep and not (plen_text.isdigit() and int(plen_text) <= bits):
            raise ValueError(text)
        plen = int(plen_text) if sep else bits
        host = int(addr) & ((1 << (bits - plen)) - 1)
        network = netaddr.IPAddress(int(addr) - host, addr.version) if host else addr
        found = ('ipv4' if bits == 32 else 'ipv6', '%s/%d' % (network, plen), bool(host))
        _NETWORKS[text] = found
    return found


def parse_network(value, where, family=None):
    """Return ``(family, 'addr/len')`` for a CIDR or a bare address, or raise SpecError.

    Host bits must be clear, as the kernel demands for routes and rules."""
    text = str(value).strip()
    try:
        fam, cidr, host_bits = _network(text)
    except ValueError:
        raise SpecError(where, '%r is not a valid IP address or CIDR' % (value,))
    if family and fam != family:
        raise SpecError(where, '%s is %s but the item is %s' % (text, fam, family))
    if host_bits:
        raise SpecError(where, '%s has host bits set (did you mean %s?)' % (text, cidr))
    return fam, cidr


def parse_address(value, where, family=None):
    """Return ``(family, 'addr')`` for a single IP address, or raise SpecError."""
    text = str(value).strip()
    try:
        fam, cidr, _host_bits = _network(text)
    except ValueError:
        raise SpecError(where, '%r is not a valid IP address' % (value,))
    if '/' in text:
        raise SpecError(where, '%r is not a valid IP address' % (value,))
    if family and fam != family:
        raise SpecError(where, '%s is %s but the item is %s' % (text, fam, family))
    return fam, cidr.split('/')[0]


def parse_ifname(value, where):
    if not IFNAME_RE.match(str(value or '')):
        raise SpecError(where, "%r is not a valid interface name (1-15 characters, no spaces or '/')" % (value,))
    return str(value)


def _choice(spec, key, default, choices, where):
    value = spec.get(key) or default
    if value not in choices:
        raise SpecError('%s.%s' % (where, key), '%r is not one of %s' % (value, ', '.join(choices)))
    return value


def _family(spec, family, where):
    """The item's family option, within ``family`` (a restriction) when given."""
    if spec.get('family') is None:
        return family
    if spec['family'] not in FAMILIES or family and spec['family'] != family:
        raise SpecError(where + '.family', '%r is not %s' % (spec['family'], family or 'ipv4 or ipv6'))
    return spec['family']


def _default_dst(family):
    return '0.0.0.0/0' if family == 'ipv4' else '::/0'


def _short(cidr):
    """``10.0.0.1/32`` → ``10.0.0.1``, as ``ip rule`` prints a host."""
    addr, plen = cidr.split('/')
    return addr if int(plen) == (32 if ':' not in addr else 128) else cidr


# --------------------------------------------------------------------------- tables

class Table(namedtuple('Table', 'name id state exclusive')):
    """A named routing table; ``id`` is None for an absent table whose name is already gone."""
    __slots__ = ()

    def path(self, rt_tables_dir):
        return os.path.join(rt_tables_dir, '%s.conf' % self.name)

    def content(self):
        return '# Managed by liteboxd.sandbox_network.policy_routing\n%d %s\n' % (self.id, self.name)


def parse_rt_tables(text):
    """Parse rt_tables syntax (``<id> <name>`` per line, ``#`` comments) into [(id, name)]."""
    entries = []
    for line in text.splitlines():
        fields = line.split('#', 1)[0].split()
        if len(fields) < 2:
            continue
        try:
            entries.append((int(fields[0], 0), fields[1]))
        except ValueError:
            continue
    return entries


def read_table_names(rt_tables_dir=RT_TABLES_DIR, files=RT_TABLES_FILES):
    """Return ``{name: (id, source_file)}`` from the rt_tables files and ``<dir>/*.conf``."""
    names = dict((name, (tid, 'builtin')) for name, tid in BUILTIN_TABLES.items())
    paths = list(files)
    if os.path.isdir(rt_tables_dir):
        paths.extend(os.path.join(rt_tables_dir, f) for f in sorted(os.listdir(rt_tables_dir)) if f.endswith('.conf'))
    for path in paths:
        text = read_file(path)
        for table_id, name in parse_rt_tables(text or ''):
            names[name] = (table_id, path)
    return names


def table_name_map(names):
    """``{id: name}`` from ``read_table_names`` output, for rendering."""
    return dict((tid, name) for name, (tid, _src) in names.items())


def resolve_table(value, names, where):
    """Table name or number → id."""
    if isinstance(value, int) and not isinstance(value, bool):
        table_id = value
    elif str(value).isdigit():
        table_id = int(str(value))
    elif value in names:
        return names[value][0]
    else:
        raise SpecError(where, 'unknown table %r (declare it under tables or in rt_tables)' % (value,))
    if not 0 < table_id <= MAX_TABLE_ID:
        raise SpecError(where, 'table id %r is out of range 1..%d' % (value, MAX_TABLE_ID))
    return table_id


def declare_tables(specs, names, rt_tables_dir):
    """Validate the tables option; return (tables, names view including them)."""
    tables, view = [], dict(names)
    seen_names, seen_ids = {}, {}
    for index, spec in enumerate(specs):
        where = 'tables[%d]' % index
        name, table_id = spec['name'], spec.get('id')
        if name in seen_names:
            raise SpecError(where + '.name', '%s is already declared in tables[%d]' % (name, seen_names[name]))
        seen_names[name] = index
        if spec['state'] == 'present':
            if table_id is None:
                raise SpecError(where + '.id', '%s.id is required for a present table' % where)
            if table_id in seen_ids:
                raise SpecError(where + '.id', 'table id clash: %d is also declared for tables[%d]'
                                % (table_id, seen_ids[table_id]))
            seen_ids[table_id] = index
            table = Table(name, table_id, 'present', spec['exclusive'])
            _check_table(table, names, rt_tables_dir, where)
            view[name] = (table_id, table.path(rt_tables_dir))
        else:
            if table_id is None and name in names:
                table_id = names[name][0]
            table = Table(name, table_id, 'absent', spec['exclusive'])
        tables.append(table)
    return tables, view


def _check_table(table, names, rt_tables_dir, where):
    """Raise SpecError when the table's name or id clash with a mapping from another file."""
    if not _TABLE_NAME_RE.match(table.name or '') or table.name.isdigit():
        raise SpecError(where + '.name', '%r is not a valid table name (letters, digits, "_", ".", "-")'
                        % (table.name,))
    if table.name in BUILTIN_TABLES or table.id in BUILTIN_TABLE_NAMES or table.id == 0:
        raise SpecError(where, 'table %s/%s is reserved by the kernel (0, default 253, main 254, local 255)'
                        % (table.name, table.id))
    if not 0 < table.id <= MAX_TABLE_ID:
        raise SpecError(where + '.id', '%r is out of range 1..%d' % (table.id, MAX_TABLE_ID))
    own = table.path(rt_tables_dir)
    for other, (tid, source) in names.items():
        if source == own:
            continue
        if other == table.name and tid != table.id:
            raise SpecError(where, 'table id clash: %s is already mapped to id %d in %s, not %d'
                            % (table.name, tid, source, table.id))
        if tid == table.id and other != table.name:
            raise SpecError(where, 'table id clash: id %d is already mapped to %s in %s' % (table.id, other, source))


# --------------------------------------------------------------------------- routes

class Route(namedtuple('Route', 'family table dst metric type via dev src scope onlink proto')):
    """A route. ``dev`` None in a wanted route accepts any device; ``proto`` is the kernel's
    originator (what policy_routing installs with, or what a dump says) and is not compared."""
    __slots__ = ()

    @property
    def key(self):
        """What the kernel treats as the same route: replacing it keeps the key."""
        return (self.family, self.table, self.dst, self.metric)


def default_scope(route_type, via, family='ipv4'):
    """The scope ``ip route`` gives a route that names none."""
    if family == 'ipv6':
        return 'global'  # IPv6 routes carry no scope
    if route_type == 'local':
        return 'host'
    if route_type in ('broadcast', 'multicast', 'anycast'):
        return 'link'
    if route_type == 'unicast' and not via:
        return 'link'
    return 'global'


def default_metric(family):
    return IPV6_DEFAULT_METRIC if family == 'ipv6' else 0


def normalize_route(spec, names, where, for_absent=False, family=None, proto=PROTO_STATIC):
    """User route spec → Route. ``names`` as from ``read_table_names``; ``family`` restricts the
    item to one family; ``for_absent``: the item only names a route to remove (by key), so neither
    via nor dev is needed."""
    route_type = _choice(spec, 'type', 'unicast', DECLARABLE_ROUTE_TYPES, where)
    family = _family(spec, family, where)
    via = src = None
    if spec.get('via'):
        family, via = parse_address(spec['via'], where + '.via', family)
    if spec.get('src'):
        family, src = parse_address(spec['src'], where + '.src', family)
    dst = spec.get('dst')
    if dst is None or str(dst).strip() == '':
        raise SpecError(where + '.dst', '%s.dst is required (a CIDR, an address or "default")' % where)
    if str(dst).strip() == 'default':
        family = family or 'ipv4'
        dst = _default_dst(family)
    else:
        family, dst = parse_network(dst, where + '.dst', family)
    dev = spec.get('dev') or None
    if dev:
        dev = parse_ifname(dev, where + '.dev')
    if route_type == 'unicast':
        if not (via or dev or for_absent):
            raise SpecError(where, 'a unicast route needs via or dev')
    elif via or dev:
        raise SpecError(where, 'a %s route takes neither via nor dev' % route_type)
    metric = spec.get('metric')
    metric = default_metric(family) if metric is None else int(metric)
    if not 0 <= metric <= MAX_TABLE_ID:
        raise SpecError(where + '.metric', '%r is out of range 0..%d' % (metric, MAX_TABLE_ID))
    scope = spec.get('scope') or default_scope(route_type, via, family)
    if scope not in SCOPES:
        raise SpecError(where + '.scope', '%r is not one of %s' % (scope, ', '.join(SCOPES)))
    table = resolve_table(spec.get('table') if spec.get('table') not in (None, '') else 'main', names,
                          where + '.table')
    return Route(family, table, dst, metric, route_type, via, dev, src, scope, bool(spec.get('onlink')), proto)


def route_from_msg(msg, ifnames):
    """A dumped route message → Route; None for route cache entries and families other than IP."""
    family = FAMILY_NAMES.get(msg['family'])
    if family is None or msg['flags'] & RTM_F_CLONED:
        return None
    attrs = msg['attrs']
    dst = attrs.get('RTA_DST')
    oif = attrs.get('RTA_OIF')
    via = attrs.get('RTA_GATEWAY')
    if 'RTA_MULTIPATH' in attrs:
        via = 'multipath:' + ','.join('%s@%s' % (hop['attrs'].get('RTA_GATEWAY'), ifnames.get(hop['oif'], hop['oif']))
                                      for hop in attrs['RTA_MULTIPATH'])
    return Route(family, attrs.get('RTA_TABLE', msg['table']),
                 '%s/%d' % (dst, msg['dst_len']) if dst else _default_dst(family),
                 attrs.get('RTA_PRIORITY', 0), ROUTE_TYPE_NAMES.get(msg['type'], str(msg['type'])), via,
                 ifnames.get(oif, str(oif)) if oif is not None else None, attrs.get('RTA_PREFSRC'),
                 SCOPE_NAMES.get(msg['scope'], str(msg['scope'])), bool(msg['flags'] & RTNH_F_ONLINK), msg['proto'])


def route_matches(wanted, current):
    """True when ``current`` (same key) already is ``wanted``; a wanted dev of None accepts any."""
    return (wanted.type == current.type and wanted.via == current.via and wanted.src == current.src
            and wanted.scope == current.scope and wanted.onlink == current.onlink
            and (wanted.dev is None or wanted.dev == current.dev))


def route_text(route, names=None, batch=False):
    """``ip route`` arguments, e.g. ``default via 10.0.0.1 dev zt0 table egress metric 100``.

    ``names`` maps table ids to the names to print (numbers otherwise; main is left out, as ``ip``
    does). ``batch``: a line for ``ip -batch``, which also names the protocol and spells the IPv6
    default as ``::/0`` (``default`` alone would mean IPv4 there)."""
    names = BUILTIN_TABLE_NAMES if names is None else names
    words = [] if route.type == 'unicast' else [route.type]
    if route.dst == _default_dst(route.family) and not (batch and route.family == 'ipv6'):
        words.append('default')
    else:
        words.append(route.dst)
    if route.via:
        words += ['via', route.via]
    if route.dev:
        words += ['dev', route.dev]
    if route.onlink:
        words.append('onlink')
    if route.table != MAIN_TABLE:
        words += ['table', names.get(route.table, str(route.table))]
    if route.scope != default_scope(route.type, route.via, route.family):
        words += ['scope', route.scope]
    if route.src:
        words += ['src', route.src]
    if batch and route.proto:
        words += ['proto', PROTOCOL_NAMES.get(route.proto, str(route.proto))]
    if route.metric != default_metric(route.family):
        words += ['metric', str(route.metric)]
    return ' '.join(words)


def route_request(route, op, ifindex):
    """The netlink request (kind, op, header, attrs) that adds, replaces or deletes ``route``.

    A delete names only the key (and matches any type, scope and protocol), as ``ip route del`` does."""
    header = dict(family=FAMILIES[route.family], dst_len=int(route.dst.split('/')[1]),
                  table=route.table if route.table < 256 else RT_TABLE_COMPAT)
    attrs = [('RTA_TABLE', route.table), ('RTA_PRIORITY', route.metric)]
    if header['dst_len']:
        attrs.append(('RTA_DST', route.dst.split('/')[0]))
    if op == 'delete':
        header['scope'] = SCOPES['nowhere']
        return ('route', op, header, attrs)
    header.update(proto=route.proto or PROTO_STATIC, scope=SCOPES[route.scope], type=ROUTE_TYPES[route.type],
                  flags=RTNH_F_ONLINK if route.onlink else 0)
    if route.via and not route.via.startswith('multipath:'):  # a dumped multipath route is removed, never made
        attrs.append(('RTA_GATEWAY', route.via))
    if route.dev:
        attrs.append(('RTA_OIF', ifindex[route.dev] if route.dev in ifindex else int(route.dev)))
    if route.src:
        attrs.append(('RTA_PREFSRC', route.src))
    return ('route', op, header, attrs)


def plan_routes(present, absent, current, exclusive_tables=()):
    """Return ``(add, change, remove)``: lists of routes, of (old, new) pairs, of routes.

    An absent route matches by key only. In an ``exclusive`` table every route not declared present
    is removed, except the kernel's own (connected and local routes) and types it alone makes."""
    by_key = {}
    for route in current:
        by_key.setdefault(route.key, route)
    add, change, remove = [], [], []
    wanted = set()
    for route in present:
        wanted.add(route.key)
        old = by_key.get(route.key)
        if old is None:
            add.append(route)
        elif not route_matches(route, old):
            change.append((old, route))
    removed = set()
    for route in absent:
        if route.key in by_key and route.key not in removed:
            remove.append(by_key[route.key])
            removed.add(route.key)
    exclusive = set(exclusive_tables)
    for route in current:
        if (route.table in exclusive and route.key not in wanted and route.key not in removed
                and route.proto != PROTO_KERNEL and route.type in ROUTE_TYPES):
            remove.append(route)
            removed.add(route.key)
    return add, change, remove


# --------------------------------------------------------------------------- rules

class Rule(namedtuple('Rule', 'family priority src dst iif oif fwmark fwmask invert action table')):
    """A policy rule. In an absent pattern, a priority or table of None matches any."""
    __slots__ = ()

    @property
    def selector(self):
        """The rule's identity: priority and match fields. Two rules with the same selector but
        another target shadow each other (the older wins), so a declared rule replaces such a rule."""
        return self[:9]


def parse_fwmark(value, where):
    """``5``, ``"0x5"`` or ``"0x5/0xff"`` → (mark, mask); mask defaults to 0xffffffff like ``ip``."""
    if value is None or value == '':
        return None, None
    mark_text, _sep, mask_text = str(value).strip().partition('/')
    try:
        mark = int(mark_text, 0)
        mask = int(mask_text, 0) if mask_text else 0xffffffff
    except ValueError:
        raise SpecError(where, '%r is not a mark (N, 0xN or 0xN/0xMASK)' % (value,))
    if not (0 <= mark <= 0xffffffff and 0 <= mask <= 0xffffffff):
        raise SpecError(where, '%r is out of the 32-bit range' % (value,))
    return mark, mask


def normalize_rule(spec, names, where, require_priority=True, family=None):
    """User rule spec → Rule. With ``require_priority=False`` (absent items) a missing priority or
    table stays None, which ``rule_selects`` treats as a wildcard."""
    action = _choice(spec, 'action', 'lookup', DECLARABLE_RULE_ACTIONS, where)
    family = _family(spec, family, where)
    src = dst = None
    if spec.get('from') not in (None, '', 'all'):
        family, src = parse_network(spec['from'], where + '.from', family)
    if spec.get('to') not in (None, '', 'all'):
        family, dst = parse_network(spec['to'], where + '.to', family)
    priority = spec.get('priority')
    if priority is None:
        if require_priority:
            raise SpecError(where + '.priority', '%s.priority is required for a present rule (it fixes the rule order)'
                            % where)
    else:
        priority = int(priority)
        if not 0 < priority < 2 ** 32:
            raise SpecError(where + '.priority', '%r is out of range 1..%d (0 is the local table rule)'
                            % (priority, 2 ** 32 - 1))
    mark, mask = parse_fwmark(spec.get('fwmark'), where + '.fwmark')
    table = None
    if action == 'lookup':
        if spec.get('table') in (None, ''):
            if require_priority:
                raise SpecError(where + '.table', '%s.table is required for action lookup' % where)
        else:
            table = resolve_table(spec['table'], names, where + '.table')
    elif spec.get('table') not in (None, ''):
        raise SpecError(where + '.table', 'a rule with action %s looks up no table' % action)
    iif = parse_ifname(spec['iif'], where + '.iif') if spec.get('iif') else None
    oif = parse_ifname(spec['oif'], where + '.oif') if spec.get('oif') else None
    return Rule(family or 'ipv4', priority, src, dst, iif, oif, mark, mask, False, action, table)


def rule_from_msg(msg):
    """A dumped rule message → Rule; None for families other than IP (multicast routing rules)."""
    family = FAMILY_NAMES.get(msg['family'])
    if family is None:
        return None
    attrs = msg['attrs']
    src, dst = attrs.get('FRA_SRC'), attrs.get('FRA_DST')
    mark, mask = attrs.get('FRA_FWMARK'), attrs.get('FRA_FWMASK')
    if mark is not None and mask is None:
        mask = 0xffffffff
    if mark is None and mask is not None:
        mark = 0
    action = RULE_ACTION_NAMES.get(msg['action'], str(msg['action']))
    return Rule(family, attrs.get('FRA_PRIORITY', 0),
                '%s/%d' % (src, msg['src_len']) if src and msg['src_len'] else None,
                '%s/%d' % (dst, msg['dst_len']) if dst and msg['dst_len'] else None,
                attrs.get('FRA_IIFNAME'), attrs.get('FRA_OIFNAME'), mark, mask,
                bool(msg['flags'] & FIB_RULE_INVERT), action,
                attrs.get('FRA_TABLE', msg['table']) if action == 'lookup' else None)


def rule_selects(pattern, rule):
    """True when an absent ``pattern`` (None priority or table = any) selects kernel ``rule``."""
    for index, want in enumerate(pattern):
        if want is None and pattern._fields[index] in ('priority', 'table'):
            continue
        if want != rule[index]:
            return False
    return True


def _rule_words(rule, names):
    words = ['not'] if rule.invert else []
    if rule.src:
        words += ['from', _short(rule.src)]
    if rule.dst:
        words += ['to', _short(rule.dst)]
    if rule.iif:
        words += ['iif', rule.iif]
    if rule.oif:
        words += ['oif', rule.oif]
    if rule.fwmark is not None:
        words += ['fwmark', '0x%x' % rule.fwmark + ('/0x%x' % rule.fwmask if rule.fwmask != 0xffffffff else '')]
    if rule.action == 'lookup':
        words += ['lookup', names.get(rule.table, str(rule.table))]
    else:
        words.append(rule.action)
    return words


def rule_text(rule, names=None):
    """``ip rule add`` arguments, e.g. ``pref 30102 from 192.168.0.0/18 lookup 3626``; ``names`` as
    for route_text."""
    return ' '.join(['pref', str(rule.priority)] + _rule_words(rule, BUILTIN_TABLE_NAMES if names is None else names))


def rule_show_text(rule, names):
    """The rule as ``ip rule show`` prints it, e.g. ``100: from 10.147.17.5 lookup zerotier-egress``."""
    words = _rule_words(rule, names)
    if not rule.src:
        words[1 if rule.invert else 0:0] = ['from', 'all']
    return ('%d: ' % rule.priority if rule.priority is not None else '') + ' '.join(words)


def rule_request(rule, op):
    """The netlink request (kind, op, header, attrs) that adds or deletes ``rule``."""
    table = rule.table or 0
    header = dict(family=FAMILIES[rule.family], action=RULE_ACTIONS[rule.action],
                  table=table if table < 256 else RT_TABLE_COMPAT, flags=FIB_RULE_INVERT if rule.invert else 0)
    attrs = [('FRA_PRIORITY', rule.priority)]
    if rule.action == 'lookup':
        attrs.append(('FRA_TABLE', table))
    for field, kind, attr in ((rule.src, 'src_len', 'FRA_SRC'), (rule.dst, 'dst_len', 'FRA_DST')):
        if field:
            addr, plen = field.split('/')
            header[kind] = int(plen)
            attrs.append((attr, addr))
    if rule.iif:
        attrs.append(('FRA_IIFNAME', rule.iif))
    if rule.oif:
        attrs.append(('FRA_OIFNAME', rule.oif))
    if rule.fwmark is not None:
        attrs += [('FRA_FWMARK', rule.fwmark), ('FRA_FWMASK', rule.fwmask)]
    return ('rule', op, header, attrs)


def plan_rules(present, absent, current, exclusive_tables=()):
    """Return ``(add, remove)`` lists of rules.

    A present rule whose selector matches a kernel rule with another target replaces it; absent
    patterns remove every rule they select; rules that look up an ``exclusive`` table and are not
    declared present are removed."""
    add, remove = [], []
    removed = set()

    def drop(rule):
        if rule not in removed:
            removed.add(rule)
            remove.append(rule)

    by_selector = {}
    for rule in current:
        by_selector.setdefault(rule.selector, []).append(rule)
    wanted = set(present)
    for rule in present:
        same = by_selector.get(rule.selector, [])
        if rule not in same:
            add.append(rule)
        for other in same:
            if other != rule:
                drop(other)
    for pattern in absent:
        for rule in current:
            if rule_selects(pattern, rule):
                drop(rule)
    exclusive = set(exclusive_tables)
    for rule in current:
        if rule.action == 'lookup' and rule.table in exclusive and rule not in wanted:
            drop(rule)
    return add, remove


# --------------------------------------------------------------------------- the boot-time file

def batch_lines(routes, rules):
    """The routes and rules as the boot-time ``ip -batch`` file's lines, tables by number so nothing
    depends on rt_tables being readable at boot: ``route replace ...`` lines (ip -batch commands),
    then ``rule [-6] <selector and target>`` lines, which the egress node's keeper adds when
    ``ip rule show`` does not list them (``ip rule`` reads IPv4 unless told -6)."""
    lines = ['route replace %s' % route_text(route, batch=True) for route in routes]
    lines += ['rule %s%s' % ('-6 ' if rule.family == 'ipv6' else '', rule_text(rule)) for rule in rules]
    return lines


# --------------------------------------------------------------------------- files

def read_file(path):
    try:
        with open(path) as handle:
            return handle.read()
    except (IOError, OSError):
        return None


def file_mode(path):
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return None


def atomic_write(module, path, content, mode):
    """Write ``content`` to ``path`` with ``mode`` through AnsibleModule.atomic_move (a temporary
    file beside it, renamed over it). Failures come out as OSError, so a Journal can undo."""
    directory = os.path.dirname(path)
    try:
        if not os.path.isdir(directory):
            os.makedirs(directory, 0o755)
        handle, tmp = tempfile.mkstemp(prefix='.ansible_tmp', dir=directory)
        with os.fdopen(handle, 'w') as stream:
            stream.write(content)
        module.atomic_move(tmp, path)
        os.chmod(path, mode)
    except Exception as exc:  # atomic_move raises bare Exception for a failed rename
        raise OSError('cannot write %s: %s' % (path, exc))


def remove_file(path):
    if os.path.lexists(path):
        os.unlink(path)


def plan_files(wanted, unwanted):
    """Return ``(write, delete)``: the ``(path, content, mode)`` of ``wanted`` whose content or mode
    differ on disk, and the paths of ``unwanted`` that exist."""
    write = [(path, content, mode) for path, content, mode in wanted
             if read_file(path) != content or file_mode(path) != mode]
    return write, [path for path in unwanted if os.path.lexists(path)]


# --------------------------------------------------------------------------- applying

class ApplyError(Exception):
    """A change the kernel (or the file system) refused; ``undone`` says whether the earlier changes
    were rolled back."""

    def __init__(self, msg, undone):
        super(ApplyError, self).__init__(msg)
        self.undone = undone


class Journal:
    """Runs changes in order, remembering how to undo each; ``rollback`` undoes in reverse.

    Netlink steps go in batches (one request per change, all sent together): the kernel handles
    them in order and acknowledges each, so the journal knows exactly which ones took effect."""

    def __init__(self, session):
        self.session = session
        self._undo = []  # ('netlink', request) or ('call', function)

    def call(self, do, undo, describe):
        try:
            do()
        except (IOError, OSError) as exc:
            raise ApplyError('%s: %s' % (describe, exc), undone=self.rollback())
        self._undo.append(('call', undo))

    def batch(self, steps):
        """``steps``: [(request, undo request, description)], sent as one batch."""
        if not steps:
            return
        errors = self.session.change([step[0] for step in steps])
        failed = None
        for step, error in zip(steps, errors):
            if error is None:
                self._undo.append(('netlink', step[1]))
            elif failed is None:
                failed = (step[2], error)
        if failed:
            raise ApplyError('%s: the kernel refused it: %s' % failed, undone=self.rollback())

    def rollback(self):
        """Undo what was done, newest first; True when every undo step succeeded."""
        clean = True
        while self._undo:
            kind, step = self._undo.pop()
            if kind == 'netlink':
                requests = [step]
                while self._undo and self._undo[-1][0] == 'netlink':
                    requests.append(self._undo.pop()[1])
                clean = all(error is None for error in self.session.change(requests)) and clean
            else:
                try:
                    step()
                except (IOError, OSError):
                    clean = False
        return clean


class Changes:
    """What a run changes: files, routes (added, replaced, removed) and rules (added, removed).

    ``origin`` maps a declared route's key or rule's selector to its option (``routes[3]``), for
    messages."""

    def __init__(self, files_write=(), files_delete=(), route_add=(), route_change=(), route_remove=(),
                 rule_add=(), rule_remove=(), origin=None):
        self.files_write, self.files_delete = list(files_write), list(files_delete)
        self.route_add, self.route_change, self.route_remove = list(route_add), list(route_change), list(route_remove)
        self.rule_add, self.rule_remove = list(rule_add), list(rule_remove)
        self.origin = origin or {}

    def __bool__(self):
        return bool(self.files_write or self.files_delete or self.route_add or self.route_change
                    or self.route_remove or self.rule_add or self.rule_remove)

    __nonzero__ = __bool__

    def _where(self, item, key):
        where = self.origin.get(key)
        return '%s (%s)' % (item, where) if where else item

    def apply(self, session, write_file, remove_file):
        """Make the changes. The order keeps traffic fail-closed: files first, routes before the rules
        that lead to them, rules removed before the routes behind them. ``write_file(path, content,
        mode)`` and ``remove_file(path)`` do the file system part (the module's atomic writer)."""
        journal = Journal(session)
        ifindex = session.ifindex()
        for path, content, mode in self.files_write:
            previous, previous_mode = read_file(path), file_mode(path)
            journal.call(lambda p=path, c=content, m=mode: write_file(p, c, m),
                         lambda p=path, c=previous, m=previous_mode: write_file(p, c, m) if c is not None
                         else remove_file(p), 'writing %s' % path)
        journal.batch([(route_request(r, 'add', ifindex), route_request(r, 'delete', ifindex),
                        self._where('adding route %s' % route_text(r), r.key)) for r in self.route_add])
        journal.batch([(route_request(new, 'replace', ifindex), route_request(old, 'replace', ifindex),
                        self._where('replacing route %s with %s' % (route_text(old), route_text(new)), new.key))
                       for old, new in self.route_change])
        journal.batch([(rule_request(r, 'add'), rule_request(r, 'delete'),
                        self._where('adding rule %s' % rule_text(r), r.selector)) for r in self.rule_add])
        journal.batch([(rule_request(r, 'delete'), rule_request(r, 'add'), 'removing rule %s' % rule_text(r))
                       for r in self.rule_remove])
        journal.batch([(route_request(r, 'delete', ifindex), route_request(r, 'add', ifindex),
                        'removing route %s' % route_text(r)) for r in self.route_remove])
        for path in self.files_delete:
            previous, previous_mode = read_file(path), file_mode(path)
            journal.call(lambda p=path: remove_file(p),
                         lambda p=path, c=previous, m=previous_mode: write_file(p, c, m), 'removing %s' % path)
