# -*- coding: utf-8 -*-
# Copyright: (c) 2026, LiteBoxd platform team
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kernel routing state as plain, comparable dicts: named tables, policy rules, routes, neighbours.

Three layers, usable separately:

* normalisation (``normalize_route``, ``normalize_rule``, ``route_from_msg``, ``rule_from_msg``):
  user specs and netlink dumps become the same dict shape, so equality is a dict comparison;
* planning (``plan_routes``, ``plan_rules``, ``plan_tables``): what to add, change and remove,
  with ``exclusive`` per table;
* the kernel (``Netlink``): one dump per object kind, then one request per change, with an undo
  journal so a refused change leaves nothing half-applied.

``format_route`` / ``format_rule`` render the dicts as ``ip route`` / ``ip rule`` text (diff output,
``ip -batch`` files). Other modules (e.g. ``cube_router``) use the route, address and neighbour
helpers.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import re
import socket

try:
    import netaddr
    HAS_NETADDR = True
    NETADDR_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - reported by the module
    HAS_NETADDR = False
    NETADDR_IMPORT_ERROR = exc

try:
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError as KernelError
    HAS_PYROUTE2 = True
    PYROUTE2_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - reported by the module
    HAS_PYROUTE2 = False
    PYROUTE2_IMPORT_ERROR = exc

    class KernelError(Exception):
        code = 0


RT_TABLES_DIR = '/etc/iproute2/rt_tables.d'
# iproute2 reads the distribution file first, then the admin's; later entries win.
RT_TABLES_FILES = ('/usr/share/iproute2/rt_tables', '/etc/iproute2/rt_tables')
BUILTIN_TABLES = {'default': 253, 'main': 254, 'local': 255}
MAX_TABLE_ID = 2 ** 32 - 1

ROUTE_TYPES = {
    'unicast': 1, 'local': 2, 'broadcast': 3, 'anycast': 4, 'multicast': 5,
    'blackhole': 6, 'unreachable': 7, 'prohibit': 8, 'throw': 9, 'nat': 10,
}
# Route types the routing modules may declare; the others are the kernel's own.
DECLARABLE_ROUTE_TYPES = ('unicast', 'unreachable', 'blackhole', 'throw', 'prohibit')
SCOPES = {'global': 0, 'site': 200, 'link': 253, 'host': 254, 'nowhere': 255}
RULE_ACTIONS = {'lookup': 1, 'goto': 2, 'nop': 3, 'blackhole': 6, 'unreachable': 7, 'prohibit': 8}
DECLARABLE_RULE_ACTIONS = ('lookup', 'unreachable', 'blackhole', 'prohibit')
PROTO_KERNEL = 2
FIB_RULE_INVERT = 0x2
FAMILIES = {'ipv4': socket.AF_INET, 'ipv6': socket.AF_INET6}
IPV6_DEFAULT_METRIC = 1024
NUD_STATES = {
    'incomplete': 0x01, 'reachable': 0x02, 'stale': 0x04, 'delay': 0x08, 'probe': 0x10,
    'failed': 0x20, 'noarp': 0x40, 'permanent': 0x80,
}

_ROUTE_TYPE_NAMES = dict((v, k) for k, v in ROUTE_TYPES.items())
_SCOPE_NAMES = dict((v, k) for k, v in SCOPES.items())
_RULE_ACTION_NAMES = dict((v, k) for k, v in RULE_ACTIONS.items())
_NAME_RE = re.compile(r'^[A-Za-z0-9_.-]{1,63}$')


class SpecError(ValueError):
    """Bad input; the message names the option and the item."""


# --------------------------------------------------------------------------- addresses

def parse_network(value, where, family=None):
    """Return ``(family_name, 'addr/len')`` for a CIDR or a bare address, or raise SpecError.

    Host bits must be clear, as the kernel demands for routes and rules."""
    text = str(value).strip()
    addr_text, _sep, plen_text = text.partition('/')
    try:
        # The address strictly (INET_PTON): older netaddr would read "10.1" as 10.1.0.0.
        addr = netaddr.IPAddress(addr_text, flags=netaddr.INET_PTON)
        if _sep and not plen_text.isdigit():
            raise ValueError(plen_text)
        net = netaddr.IPNetwork('%s/%s' % (addr, plen_text if _sep else addr.netmask_bits()))
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise SpecError('%s: %r is not a valid IP address or CIDR' % (where, value))
    fam = 'ipv4' if net.version == 4 else 'ipv6'
    if family and fam != family:
        raise SpecError('%s: %s is %s but the item is %s' % (where, text, fam, family))
    if net.ip != net.network:
        raise SpecError('%s: %s has host bits set (did you mean %s?)' % (where, text, net.cidr))
    return fam, '%s/%d' % (net.network, net.prefixlen)


def parse_address(value, where, family=None):
    """Return ``(family_name, 'addr')`` for a single IP address, or raise SpecError."""
    text = str(value).strip()
    try:
        addr = netaddr.IPAddress(text, flags=netaddr.INET_PTON)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise SpecError('%s: %r is not a valid IP address' % (where, value))
    fam = 'ipv4' if addr.version == 4 else 'ipv6'
    if family and fam != family:
        raise SpecError('%s: %s is %s but the item is %s' % (where, text, fam, family))
    return fam, str(addr)


def overlapping_networks(cidrs):
    """Return the pairs of CIDRs (in input order) that overlap; inputs must be valid CIDRs."""
    nets = [netaddr.IPNetwork(c) for c in cidrs]
    pairs = []
    for i, left in enumerate(nets):
        for j in range(i + 1, len(nets)):
            right = nets[j]
            if left.version == right.version and (left.first <= right.last and right.first <= left.last):
                pairs.append((cidrs[i], cidrs[j]))
    return pairs


def _default_dst(family):
    return '0.0.0.0/0' if family == 'ipv4' else '::/0'


def _family_name(af):
    return 'ipv4' if af == socket.AF_INET else 'ipv6'


# --------------------------------------------------------------------------- table names

def parse_rt_tables(text):
    """Parse rt_tables syntax (``<id> <name>`` per line, ``#`` comments) into [(id, name)]."""
    entries = []
    for line in text.splitlines():
        line = line.split('#', 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) < 2:
            continue
        try:
            table_id = int(fields[0], 0)
        except ValueError:
            continue
        entries.append((table_id, fields[1]))
    return entries


def table_file_path(name, rt_tables_dir=RT_TABLES_DIR):
    return os.path.join(rt_tables_dir, '%s.conf' % name)


def table_file_content(name, table_id):
    return '# Managed by liteboxd.sandbox_network.policy_routing\n%d %s\n' % (table_id, name)


def read_table_names(rt_tables_dir=RT_TABLES_DIR, files=RT_TABLES_FILES):
    """Return ``{name: (id, source_file)}`` from the rt_tables files and ``<dir>/*.conf``."""
    names = dict((name, (tid, 'builtin')) for name, tid in BUILTIN_TABLES.items())
    paths = list(files)
    if os.path.isdir(rt_tables_dir):
        paths.extend(os.path.join(rt_tables_dir, f) for f in sorted(os.listdir(rt_tables_dir)) if f.endswith('.conf'))
    for path in paths:
        try:
            with open(path) as fh:
                text = fh.read()
        except (IOError, OSError):
            continue
        for table_id, name in parse_rt_tables(text):
            names[name] = (table_id, path)
    return names


def table_name_map(names):
    """``{id: name}`` from ``read_table_names`` output (for rendering)."""
    return dict((tid, name) for name, (tid, _src) in names.items())


def check_table_declaration(name, table_id, names, rt_tables_dir=RT_TABLES_DIR, where='tables'):
    """Raise SpecError when ``name``/``table_id`` clash with a mapping from another file."""
    if not _NAME_RE.match(name or '') or name.isdigit():
        raise SpecError('%s.name: %r is not a valid table name (letters, digits, "_", ".", "-")' % (where, name))
    if name in BUILTIN_TABLES or table_id in BUILTIN_TABLES.values() or table_id == 0:
        raise SpecError('%s: table %s/%s is reserved by the kernel (0, default 253, main 254, local 255)'
                        % (where, name, table_id))
    if not 0 < table_id <= MAX_TABLE_ID:
        raise SpecError('%s.id: %r is out of range 1..%d' % (where, table_id, MAX_TABLE_ID))
    own = table_file_path(name, rt_tables_dir)
    for other, (tid, source) in names.items():
        if source == own:
            continue
        if other == name and tid != table_id:
            raise SpecError('%s: table id clash: %s is already mapped to id %d in %s, not %d'
                            % (where, name, tid, source, table_id))
        if tid == table_id and other != name:
            raise SpecError('%s: table id clash: id %d is already mapped to %s in %s'
                            % (where, table_id, other, source))


def resolve_table(value, names, where):
    """Table name or number → id (int)."""
    if isinstance(value, int) and not isinstance(value, bool):
        table_id = value
    elif str(value).isdigit():
        table_id = int(str(value))
    elif value in names:
        return names[value][0]
    else:
        raise SpecError('%s: unknown table %r (declare it under tables or in rt_tables)' % (where, value))
    if not 0 < table_id <= MAX_TABLE_ID:
        raise SpecError('%s: table id %r is out of range 1..%d' % (where, value, MAX_TABLE_ID))
    return table_id


# --------------------------------------------------------------------------- routes

ROUTE_KEY_FIELDS = ('family', 'table', 'dst', 'metric')
ROUTE_FIELDS = ROUTE_KEY_FIELDS + ('type', 'via', 'dev', 'src', 'scope')


def route_key(route):
    """What the kernel treats as the same route: replacing it keeps the key."""
    return tuple(route[f] for f in ROUTE_KEY_FIELDS)


def _default_scope(route_type, via, family='ipv4'):
    if family == 'ipv6':
        return 'global'  # IPv6 routes carry no scope
    if route_type == 'local':
        return 'host'
    if route_type in ('broadcast', 'multicast', 'anycast'):
        return 'link'
    if route_type == 'unicast' and not via:
        return 'link'
    return 'global'


def normalize_route(spec, names, where='routes', for_absent=False):
    """User route spec → route dict (see ROUTE_FIELDS). ``names`` from ``read_table_names``.

    ``for_absent``: the item only names a route to remove (matched by key), so via/dev are optional."""
    route_type = spec.get('type') or 'unicast'
    if route_type not in DECLARABLE_ROUTE_TYPES:
        raise SpecError('%s.type: %r is not one of %s' % (where, route_type, ', '.join(DECLARABLE_ROUTE_TYPES)))
    family = spec.get('family')
    if family is not None and family not in FAMILIES:
        raise SpecError('%s.family: %r is not ipv4 or ipv6' % (where, family))
    via = spec.get('via')
    src = spec.get('src')
    if via:
        family, via = parse_address(via, '%s.via' % where, family)
    if src:
        family, src = parse_address(src, '%s.src' % where, family)
    dst = spec.get('dst')
    if dst is None or str(dst).strip() == '':
        raise SpecError('%s.dst is required (a CIDR, an address or "default")' % where)
    if str(dst).strip() == 'default':
        family = family or 'ipv4'
        dst = _default_dst(family)
    else:
        family, dst = parse_network(dst, '%s.dst' % where, family)
    dev = spec.get('dev') or None
    if route_type == 'unicast':
        if not (via or dev or for_absent):
            raise SpecError('%s: a unicast route needs via or dev' % where)
    elif via or dev:
        raise SpecError('%s: a %s route takes neither via nor dev' % (where, route_type))
    metric = spec.get('metric')
    if metric is None:
        metric = IPV6_DEFAULT_METRIC if family == 'ipv6' else 0
    metric = int(metric)
    if not 0 <= metric <= MAX_TABLE_ID:
        raise SpecError('%s.metric: %r is out of range 0..%d' % (where, metric, MAX_TABLE_ID))
    scope = spec.get('scope') or _default_scope(route_type, via, family)
    if scope not in SCOPES:
        raise SpecError('%s.scope: %r is not one of %s' % (where, scope, ', '.join(SCOPES)))
    table = resolve_table(spec.get('table') if spec.get('table') not in (None, '') else 'main', names, '%s.table' % where)
    return dict(family=family, table=table, dst=dst, metric=metric, type=route_type,
                via=via, dev=dev, src=src, scope=scope)


def _attrs(msg):
    return dict((name, value) for name, value in msg.get('attrs', []))


def route_from_msg(msg, ifnames):
    """RTM_NEWROUTE message (pyroute2 dict-like) → route dict plus ``proto``; None for cache/clone routes."""
    attrs = _attrs(msg)
    family = _family_name(msg['family'])
    dst = attrs.get('RTA_DST')
    dst = '%s/%d' % (dst, msg['dst_len']) if dst else _default_dst(family)
    oif = attrs.get('RTA_OIF')
    route = dict(
        family=family,
        table=attrs.get('RTA_TABLE', msg.get('table')),
        dst=dst,
        metric=attrs.get('RTA_PRIORITY', 0),
        type=_ROUTE_TYPE_NAMES.get(msg['type'], str(msg['type'])),
        via=attrs.get('RTA_GATEWAY'),
        dev=ifnames.get(oif, str(oif)) if oif is not None else None,
        src=attrs.get('RTA_PREFSRC'),
        scope=_SCOPE_NAMES.get(msg['scope'], str(msg['scope'])),
        proto=msg.get('proto'),
    )
    if 'RTA_MULTIPATH' in attrs:
        hops = []
        for hop in attrs['RTA_MULTIPATH']:
            hop_attrs = _attrs(hop)
            hops.append('%s@%s' % (hop_attrs.get('RTA_GATEWAY'), ifnames.get(hop.get('oif'), hop.get('oif'))))
        route['via'] = 'multipath:' + ','.join(hops)
    return route


def route_matches(desired, current):
    """True when ``current`` (kernel) already is ``desired``; a desired dev of None accepts any dev."""
    for field in ROUTE_FIELDS:
        if field == 'dev' and desired['dev'] is None:
            continue
        if desired[field] != current[field]:
            return False
    return True


def plan_routes(present, absent, current, exclusive_tables=()):
    """Return ``(add, change, remove)``: lists of routes, of (old, new) pairs, of routes.

    ``present``/``absent`` are normalised route dicts; an absent route matches by key only.
    In an ``exclusive`` table every route not declared present is removed, except the kernel's own
    (proto kernel: connected and local routes)."""
    by_key = {}
    for route in current:
        by_key.setdefault(route_key(route), route)
    add, change, remove = [], [], []
    wanted = set()
    for route in present:
        key = route_key(route)
        wanted.add(key)
        old = by_key.get(key)
        if old is None:
            add.append(route)
        elif not route_matches(route, old):
            change.append((old, route))
    removed = set()
    for route in absent:
        key = route_key(route)
        if key in by_key and key not in removed:
            remove.append(by_key[key])
            removed.add(key)
    exclusive = set(exclusive_tables)
    for route in current:
        key = route_key(route)
        if (route['table'] in exclusive and key not in wanted and key not in removed
                and route.get('proto') != PROTO_KERNEL and route['type'] in ROUTE_TYPES):
            remove.append(route)
            removed.add(key)
    return add, change, remove


def format_route(route, table_names=None):
    """Render a route dict as ``ip route`` text, e.g. ``default via 10.0.0.1 dev zt0 table egress metric 100``."""
    table_names = table_names or {}
    words = []
    if route['type'] != 'unicast':
        words.append(route['type'])
    words.append('default' if route['dst'] in ('0.0.0.0/0', '::/0') else _short_dst(route['dst']))
    if route.get('via'):
        words += ['via', route['via']]
    if route.get('dev'):
        words += ['dev', route['dev']]
    words += ['table', str(table_names.get(route['table'], route['table']))]
    if route['scope'] != _default_scope(route['type'], route.get('via'), route['family']):
        words += ['scope', route['scope']]
    if route.get('src'):
        words += ['src', route['src']]
    default_metric = IPV6_DEFAULT_METRIC if route['family'] == 'ipv6' else 0
    if route['metric'] != default_metric:
        words += ['metric', str(route['metric'])]
    return ' '.join(words)


def _short_dst(dst):
    """``10.0.0.1/32`` → ``10.0.0.1`` as ``ip`` prints host routes."""
    addr, plen = dst.split('/')
    full = 32 if ':' not in addr else 128
    return addr if int(plen) == full else dst


# --------------------------------------------------------------------------- rules

RULE_SELECTOR_FIELDS = ('family', 'priority', 'from', 'to', 'iif', 'oif', 'fwmark', 'fwmask', 'invert')
RULE_FIELDS = RULE_SELECTOR_FIELDS + ('action', 'table')


def rule_selector(rule):
    """A rule's identity: priority and match fields. Two rules with the same selector but another
    target would shadow each other (the older wins), so a declared rule replaces such a rule."""
    return tuple(rule[f] for f in RULE_SELECTOR_FIELDS)


def parse_fwmark(value, where):
    """``5``, ``"0x5"`` or ``"0x5/0xff"`` → (mark, mask); mask defaults to 0xffffffff like ``ip``."""
    if value is None or value == '':
        return None, None
    text = str(value).strip()
    mark_text, _sep, mask_text = text.partition('/')
    try:
        mark = int(mark_text, 0)
        mask = int(mask_text, 0) if mask_text else 0xffffffff
    except ValueError:
        raise SpecError('%s: %r is not a mark (N, 0xN or 0xN/0xMASK)' % (where, value))
    if not (0 <= mark <= 0xffffffff and 0 <= mask <= 0xffffffff):
        raise SpecError('%s: %r is out of the 32-bit range' % (where, value))
    return mark, mask


def normalize_rule(spec, names, where='rules', require_priority=True):
    """User rule spec → rule dict (see RULE_FIELDS).

    With ``require_priority=False`` (absent items) a missing priority or table stays None and
    ``rule_selects`` treats it as a wildcard."""
    action = spec.get('action') or 'lookup'
    if action not in DECLARABLE_RULE_ACTIONS:
        raise SpecError('%s.action: %r is not one of %s' % (where, action, ', '.join(DECLARABLE_RULE_ACTIONS)))
    family = spec.get('family')
    if family is not None and family not in FAMILIES:
        raise SpecError('%s.family: %r is not ipv4 or ipv6' % (where, family))
    src = dst = None
    if spec.get('from') not in (None, '', 'all'):
        family, src = parse_network(spec['from'], '%s.from' % where, family)
    if spec.get('to') not in (None, '', 'all'):
        family, dst = parse_network(spec['to'], '%s.to' % where, family)
    family = family or 'ipv4'
    priority = spec.get('priority')
    if priority is None:
        if require_priority:
            raise SpecError('%s.priority is required for a present rule (it fixes the rule order)' % where)
    else:
        priority = int(priority)
        if not 0 < priority < 2 ** 32:
            raise SpecError('%s.priority: %r is out of range 1..%d (0 is the local table rule)'
                            % (where, priority, 2 ** 32 - 1))
    mark, mask = parse_fwmark(spec.get('fwmark'), '%s.fwmark' % where)
    table = None
    if action == 'lookup':
        if spec.get('table') in (None, ''):
            if require_priority:
                raise SpecError('%s.table is required for action lookup' % where)
        else:
            table = resolve_table(spec['table'], names, '%s.table' % where)
    elif spec.get('table') not in (None, ''):
        raise SpecError('%s.table: a rule with action %s looks up no table' % (where, action))
    return {'family': family, 'priority': priority, 'from': src, 'to': dst,
            'iif': spec.get('iif') or None, 'oif': spec.get('oif') or None,
            'fwmark': mark, 'fwmask': mask, 'invert': False, 'action': action, 'table': table}


def rule_from_msg(msg):
    """RTM_NEWRULE message → rule dict."""
    attrs = _attrs(msg)
    family = _family_name(msg['family'])
    src = attrs.get('FRA_SRC')
    dst = attrs.get('FRA_DST')
    action = _RULE_ACTION_NAMES.get(msg['action'], str(msg['action']))
    mark = attrs.get('FRA_FWMARK')
    mask = attrs.get('FRA_FWMASK')
    if mark is not None and mask is None:
        mask = 0xffffffff
    if mark is None and mask is not None:
        mark = 0
    table = attrs.get('FRA_TABLE', msg.get('table'))
    return {'family': family, 'priority': attrs.get('FRA_PRIORITY', 0),
            'from': '%s/%d' % (src, msg['src_len']) if src else None,
            'to': '%s/%d' % (dst, msg['dst_len']) if dst else None,
            'iif': attrs.get('FRA_IIFNAME'), 'oif': attrs.get('FRA_OIFNAME'),
            'fwmark': mark, 'fwmask': mask, 'invert': bool(msg.get('flags', 0) & FIB_RULE_INVERT),
            'action': action, 'table': table if action == 'lookup' else None}


def rule_selects(pattern, rule):
    """True when an absent ``pattern`` (None priority/table = any) selects kernel ``rule``."""
    for field in RULE_FIELDS:
        want = pattern[field]
        if field in ('priority', 'table') and want is None:
            continue
        if want != rule[field]:
            return False
    return True


def plan_rules(present, absent, current, exclusive_tables=()):
    """Return ``(add, remove)`` lists of rule dicts.

    A present rule whose selector matches a kernel rule with another target replaces it; absent
    patterns remove every rule they select; rules that look up an ``exclusive`` table and are not
    declared present are removed."""
    add, remove = [], []
    removed = set()

    def drop(rule):
        ident = tuple(rule[f] for f in RULE_FIELDS)
        if ident not in removed:
            removed.add(ident)
            remove.append(rule)

    wanted = set(tuple(r[f] for f in RULE_FIELDS) for r in present)
    for rule in present:
        same = [c for c in current if rule_selector(c) == rule_selector(rule)]
        if not any(c == rule for c in same):
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
        if rule['action'] == 'lookup' and rule['table'] in exclusive and tuple(rule[f] for f in RULE_FIELDS) not in wanted:
            drop(rule)
    return add, remove


def duplicate_selectors(rules):
    """Raise SpecError when two declared present rules share a selector (priority and matches).

    Each rule may carry a ``where`` key naming its item (default ``rules[<index>]``)."""
    seen = {}
    for index, rule in enumerate(rules):
        where = rule.get('where', 'rules[%d]' % index)
        sel = rule_selector(rule)
        if sel in seen:
            raise SpecError('%s: priority clash with %s: same priority %d and selectors, so only the '
                            'older rule would ever match' % (where, seen[sel], rule['priority']))
        seen[sel] = where


def format_rule(rule, table_names=None):
    """Render a rule dict as ``ip rule`` text, e.g. ``100: from 10.147.17.5 lookup zerotier-egress``."""
    table_names = table_names or {}
    words = []
    if rule.get('priority') is not None:
        words.append('%d:' % rule['priority'])
    if rule.get('invert'):
        words.append('not')
    words += ['from', _short_dst(rule['from']) if rule.get('from') else 'all']
    if rule.get('to'):
        words += ['to', _short_dst(rule['to'])]
    if rule.get('fwmark') is not None:
        mark = '0x%x' % rule['fwmark']
        if rule.get('fwmask') not in (None, 0xffffffff):
            mark += '/0x%x' % rule['fwmask']
        words += ['fwmark', mark]
    if rule.get('iif'):
        words += ['iif', rule['iif']]
    if rule.get('oif'):
        words += ['oif', rule['oif']]
    if rule['action'] == 'lookup':
        words += ['lookup', str(table_names.get(rule['table'], rule['table']))]
    else:
        words.append(rule['action'])
    return ' '.join(words)


# --------------------------------------------------------------------------- tables

def plan_tables(declared, names, rt_tables_dir=RT_TABLES_DIR):
    """Return ``(write, delete)``: ``[(path, content)]`` to write and ``[path]`` to delete.

    ``declared`` is a list of ``{name, id, state}`` already checked with ``check_table_declaration``."""
    write, delete = [], []
    for table in declared:
        path = table_file_path(table['name'], rt_tables_dir)
        if table['state'] == 'present':
            content = table_file_content(table['name'], table['id'])
            if _read(path) != content:
                write.append((path, content))
        elif os.path.exists(path):
            delete.append(path)
    return write, delete


def _read(path):
    try:
        with open(path) as fh:
            return fh.read()
    except (IOError, OSError):
        return None


# --------------------------------------------------------------------------- the kernel

class ApplyError(Exception):
    """A change the kernel refused; ``undone`` says whether the earlier changes were rolled back."""

    def __init__(self, msg, undone):
        super(ApplyError, self).__init__(msg)
        self.undone = undone


class Netlink:
    """Thin pyroute2 wrapper speaking the dicts above. Use as a context manager."""

    def __init__(self):
        self.ipr = IPRoute()
        self._ifnames = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.ipr.close()

    # reads: one dump each
    def links(self):
        """``{ifname: index}``."""
        return dict((name, index) for index, name in self.ifnames().items())

    def ifnames(self):
        """``{index: ifname}`` (cached for this connection)."""
        if self._ifnames is None:
            self._ifnames = dict((link['index'], link.get_attr('IFLA_IFNAME')) for link in self.ipr.get_links())
        return self._ifnames

    def link_states(self):
        """``{ifname: {'index', 'up', 'carrier', 'kind'}}``."""
        states = {}
        for link in self.ipr.get_links():
            info = link.get_attr('IFLA_LINKINFO')
            states[link.get_attr('IFLA_IFNAME')] = {
                'index': link['index'], 'up': bool(link['flags'] & 1),
                'carrier': bool(link.get_attr('IFLA_CARRIER')),
                'kind': info.get_attr('IFLA_INFO_KIND') if info else None}
        return states

    def addresses(self):
        """``[{'family', 'address', 'prefixlen', 'dev'}]`` for every interface address."""
        ifnames = self.ifnames()
        result = []
        for msg in self.ipr.get_addr():
            result.append({'family': _family_name(msg['family']), 'address': msg.get_attr('IFA_ADDRESS'),
                           'local': msg.get_attr('IFA_LOCAL') or msg.get_attr('IFA_ADDRESS'),
                           'prefixlen': msg['prefixlen'], 'dev': ifnames.get(msg['index'])})
        return result

    def routes(self, families=('ipv4', 'ipv6')):
        """Every route in every table (unicast, local, unreachable...), kernel's own included."""
        ifnames = self.ifnames()
        result = []
        for family in families:
            for msg in self.ipr.route('dump', family=FAMILIES[family]):
                if msg['flags'] & 0x200:  # RTM_F_CLONED: route cache entries are not routes
                    continue
                result.append(route_from_msg(msg, ifnames))
        return result

    def rules(self, families=('ipv4', 'ipv6')):
        result = []
        for family in families:
            result.extend(rule_from_msg(msg) for msg in self.ipr.get_rules(family=FAMILIES[family]))
        return result

    def neighbours(self, dev=None):
        """``[{'family', 'dst', 'lladdr', 'dev', 'state'}]`` (state as the ``ip neigh`` word)."""
        ifnames = self.ifnames()
        state_names = dict((v, k) for k, v in NUD_STATES.items())
        kwargs = {}
        if dev is not None:
            kwargs['ifindex'] = self.links()[dev]
        result = []
        for msg in self.ipr.get_neighbours(**kwargs):
            result.append({'family': _family_name(msg['family']), 'dst': msg.get_attr('NDA_DST'),
                           'lladdr': msg.get_attr('NDA_LLADDR'), 'dev': ifnames.get(msg['ifindex']),
                           'state': state_names.get(msg['state'], str(msg['state']))})
        return result

    # writes
    def _route_args(self, route):
        args = dict(family=FAMILIES[route['family']], dst=route['dst'], table=route['table'],
                    priority=route['metric'], type=route['type'], scope=SCOPES[route['scope']])
        if route.get('via'):
            args['gateway'] = route['via']
        if route.get('dev'):
            args['oif'] = self.links()[route['dev']]
        if route.get('src'):
            args['prefsrc'] = route['src']
        return args

    def add_route(self, route):
        self.ipr.route('add', **self._route_args(route))

    def replace_route(self, route):
        self.ipr.route('replace', **self._route_args(route))

    def delete_route(self, route):
        args = dict(family=FAMILIES[route['family']], dst=route['dst'], table=route['table'],
                    priority=route['metric'])
        self.ipr.route('del', **args)

    def _rule_args(self, rule):
        args = dict(family=FAMILIES[rule['family']], priority=rule['priority'], action=RULE_ACTIONS[rule['action']])
        if rule['action'] == 'lookup':
            args['table'] = rule['table']
        for field, attr in (('from', 'src'), ('to', 'dst')):
            if rule.get(field):
                addr, plen = rule[field].split('/')
                args[attr] = addr
                args[attr + '_len'] = int(plen)
        if rule.get('iif'):
            args['iifname'] = rule['iif']
        if rule.get('oif'):
            args['oifname'] = rule['oif']
        if rule.get('fwmark') is not None:
            args['fwmark'] = rule['fwmark']
            args['fwmask'] = rule['fwmask']
        if rule.get('invert'):
            args['flags'] = FIB_RULE_INVERT
        return args

    def add_rule(self, rule):
        self.ipr.rule('add', **self._rule_args(rule))

    def delete_rule(self, rule):
        self.ipr.rule('del', **self._rule_args(rule))

    def set_neighbour(self, dst, lladdr, dev, state='permanent'):
        self.ipr.neigh('replace', dst=dst, lladdr=lladdr, ifindex=self.links()[dev], state=NUD_STATES[state])

    def delete_neighbour(self, dst, dev):
        self.ipr.neigh('del', dst=dst, ifindex=self.links()[dev])


class Journal:
    """Runs changes in order and remembers how to undo each; ``rollback`` undoes in reverse."""

    def __init__(self):
        self._undo = []

    def run(self, do, undo, describe):
        try:
            do()
        except KernelError as exc:
            raise ApplyError('%s: the kernel refused it: %s' % (describe, _kernel_message(exc)), undone=self.rollback())
        except EnvironmentError as exc:
            raise ApplyError('%s: %s' % (describe, exc), undone=self.rollback())
        self._undo.append(undo)

    def rollback(self):
        """Undo what was done; True when every undo step succeeded."""
        clean = True
        while self._undo:
            step = self._undo.pop()
            try:
                step()
            except (KernelError, EnvironmentError):
                clean = False
        return clean


def _kernel_message(exc):
    code = getattr(exc, 'code', None)
    if code and code in errno.errorcode:
        return '%s (%s)' % (os.strerror(code), errno.errorcode[code])
    return str(exc)


def write_file(path, content):
    """Write ``content`` atomically; return the previous content (None when absent) for undo."""
    previous = _read(path)
    directory = os.path.dirname(path)
    if directory and not os.path.isdir(directory):
        os.makedirs(directory)
    tmp = '%s.tmp.%d' % (path, os.getpid())
    with open(tmp, 'w') as fh:
        fh.write(content)
    os.chmod(tmp, 0o644)
    os.rename(tmp, path)
    return previous


def restore_file(path, previous):
    if previous is None:
        if os.path.exists(path):
            os.unlink(path)
    else:
        write_file(path, previous)
