#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, LiteBoxd platform team
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: policy_routing
short_description: Named routing tables, policy rules and routes, read from and written to the kernel
version_added: 0.1.0
description:
  - Declares named routing tables (persisted as C(<rt_tables_dir>/<name>.conf), so C(ip) and the
    kernel agree on the name), policy rules (C(ip rule)) and routes (C(ip route)) in any table.
  - Reads the kernel state once per object kind (links, addresses, rules, routes), changes only what
    differs and returns what it changed. Check mode predicts the same changes; diff mode shows the
    affected rules, routes and table files as C(ip)-like text.
  - All input is validated before anything is changed. A change the kernel still refuses undoes the
    changes already made in the same run, so a failed run leaves nothing half-applied.
  - A route is identified, like in the kernel, by family, table, destination and metric; a declared
    route with the same identity but another type, gateway, device, source or scope replaces it.
    A rule is identified by its priority and selectors (from, to, iif, oif, fwmark); a declared rule
    replaces a rule with the same identity and another target, which would otherwise shadow it.
author:
  - LiteBoxd platform team (@liteboxd)
requirements:
  - netaddr
extends_documentation_fragment:
  - liteboxd.sandbox_network.attributes
  - liteboxd.sandbox_network.attributes.linux
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
options:
  tables:
    description:
      - Named routing tables.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description:
          - Table name, used by I(rules[].table) and I(routes[].table).
        type: str
        required: true
      id:
        description:
          - Table number (1..4294967295, not 253-255). Required when I(state=present).
          - Fails when the name or the number is already mapped differently in C(rt_tables) or
            another file of I(rt_tables_dir).
        type: int
      state:
        description:
          - C(absent) removes the name file, every non-kernel route in the table and every rule
            that looks the table up.
        type: str
        choices: [present, absent]
        default: present
      exclusive:
        description:
          - Remove the routes in this table and the rules that look it up which are not declared
            present in this task (the kernel's own connected routes are kept).
        type: bool
        default: false
  rules:
    description:
      - Policy routing rules.
    type: list
    elements: dict
    default: []
    suboptions:
      priority:
        description:
          - Rule priority (1..4294967295); lower matches first. Required when I(state=present);
            for C(absent) a missing priority matches any.
        type: int
      from:
        description:
          - Source address or CIDR; omitted or C(all) matches any.
        type: str
      to:
        description:
          - Destination address or CIDR; omitted or C(all) matches any.
        type: str
      iif:
        description:
          - Incoming interface name.
        type: str
      oif:
        description:
          - Outgoing interface name (for locally generated traffic bound to a device).
        type: str
      fwmark:
        description:
          - Firewall mark, C(N), C(0xN) or C(0xN/0xMASK).
        type: str
      table:
        description:
          - Table name or number to look up (action C(lookup)). For C(absent) a missing table matches any.
        type: str
      action:
        description:
          - What the rule does.
        type: str
        choices: [lookup, unreachable, blackhole, prohibit]
        default: lookup
      family:
        description:
          - Address family when no address says it.
        type: str
        choices: [ipv4, ipv6]
      state:
        description:
          - Whether the rule is present.
        type: str
        choices: [present, absent]
        default: present
  routes:
    description:
      - Routes.
    type: list
    elements: dict
    default: []
    suboptions:
      dst:
        description:
          - Destination CIDR or address, or C(default).
        type: str
        required: true
      type:
        description:
          - Route type. C(unreachable), C(blackhole), C(prohibit) and C(throw) take neither I(via) nor I(dev).
        type: str
        choices: [unicast, unreachable, blackhole, throw, prohibit]
        default: unicast
      via:
        description:
          - Gateway address.
        type: str
      dev:
        description:
          - Output device; it must exist.
        type: str
      src:
        description:
          - Preferred source address; it must be an address of this host.
        type: str
      metric:
        description:
          - Route metric (priority). Defaults to 0 for IPv4 and 1024 for IPv6, as in the kernel.
        type: int
      table:
        description:
          - Table name or number.
        type: str
        default: main
      scope:
        description:
          - Route scope; defaults as C(ip route) does (C(link) for a unicast route without gateway).
        type: str
        choices: [global, site, link, host, nowhere]
      family:
        description:
          - Address family when no address says it (for C(default)).
        type: str
        choices: [ipv4, ipv6]
      state:
        description:
          - Whether the route is present. An absent route is matched by family, table, dst and metric.
        type: str
        choices: [present, absent]
        default: present
  rt_tables_dir:
    description:
      - Directory of the per-table name files.
    type: path
    default: /etc/iproute2/rt_tables.d
  batch_file:
    description:
      - Also write the present routes and rules of this task to this file (mode C(0644), replaced
        atomically; a missing directory is created), for a service that re-applies them at boot and
        when a device comes back. It holds C(route replace ...) lines for C(ip -batch), then C(rule [-6] <selector>)
        lines to add when C(ip rule show) lacks them; tables are written by number.
      - The file is rendered from the same routes and rules the module applies, so the two cannot
        disagree. In check mode it is compared, not written (RV(batch_file.written) is false).
    type: path
notes:
  - Works in the network namespace it runs in (for example under C(ip netns exec)).
  - Speed, measured with C(tests/bench/policy_routing_bench.py) (1,000 routes in 100 tables and 100 rules in
    one task, the module run as Ansible runs it, on a 2-core machine) - the first apply takes 0.25-0.29 s and
    a run that changes nothing 0.23-0.25 s (0.19-0.27 s under Debian 12's python3), where the same state as a
    shell loop of C(ip) commands takes 0.8-1.0 s and its re-run 1.0-1.3 s (3.5-4x). About 0.14 s of each run
    is the interpreter starting and importing AnsibleModule; validating the 1,000 route items and echoing
    them in the result cost another 0.1 s. The module reads each object kind in one netlink dump, sends its
    changes in batches and imports nothing heavier than netaddr. The design before (pyroute2, one request per
    change) took 0.8-1.4 s and 0.5-0.65 s on the same machine.
  - A gateway the kernel cannot reach is only detected when the kernel refuses the route, so check
    mode cannot predict that failure; the real run then undoes its earlier changes and fails.
'''

EXAMPLES = r'''
- name: Fail-closed egress table for the egress node's tunnel address
  liteboxd.sandbox_network.policy_routing:
    tables:
      - name: zerotier-egress
        id: 100
        exclusive: true
    rules:
      - priority: 100
        from: 10.147.17.5
        table: zerotier-egress
    routes:
      - dst: default
        via: 10.147.17.1
        dev: ztabcdef12
        metric: 100
        table: zerotier-egress
      - dst: default
        type: unreachable
        metric: 4278198272
        table: zerotier-egress
      - dst: 10.42.0.0/16
        type: throw
        table: zerotier-egress

- name: The seed's rollback
  liteboxd.sandbox_network.policy_routing:
    tables:
      - name: zerotier-egress
        state: absent
'''

RETURN = r'''
tables:
  description: Table name files written and removed.
  returned: always
  type: dict
  sample: {"written": ["/etc/iproute2/rt_tables.d/zerotier-egress.conf"], "removed": []}
rules:
  description: Rules added and removed, as C(ip rule) text.
  returned: always
  type: dict
  sample: {"added": ["100: from 10.147.17.5 lookup zerotier-egress"], "removed": []}
routes:
  description: Routes added, changed (before and after) and removed, as C(ip route) text.
  returned: always
  type: dict
  sample:
    added: ["default via 10.147.17.1 dev ztabcdef12 table zerotier-egress metric 100"]
    changed: []
    removed: []
batch_file:
  description: The boot-time file of O(batch_file), whether it differed and whether it was written (not in check mode).
  returned: when O(batch_file) is set
  type: dict
  contains:
    path:
      description: The file.
      type: str
    changed:
      description: Its content or mode differed from what the module renders.
      type: bool
    written:
      description: The module wrote it in this run.
      type: bool
  sample: {"path": "/etc/liteboxd/egress-routing.ip", "changed": true, "written": true}
'''

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.liteboxd.sandbox_network.plugins.module_utils import routing
from ansible_collections.liteboxd.sandbox_network.plugins.module_utils.netlink import KernelError, Session

BATCH_FILE_MODE = 0o644


class Declaration:
    """The task's routes and rules, normalised; ``origin`` maps a present route's key and a present
    rule's selector to the item that declared it (``routes[3]``)."""

    def __init__(self, params, names, tables):
        # Absent items naming a table declared absent whose name is already gone are dropped: nothing
        # in the kernel can be in it any more.
        vanished = set(t.name for t in tables if t.state == 'absent' and t.id is None)
        self.routes_present, self.routes_absent, self.rules_present, self.rules_absent = [], [], [], []
        self.origin = {}
        for index, spec in enumerate(params['routes']):
            where, absent = 'routes[%d]' % index, spec['state'] == 'absent'
            if absent and spec.get('table') in vanished:
                continue
            route = routing.normalize_route(spec, names, where, for_absent=absent)
            if absent:
                self.routes_absent.append(route)
                continue
            if route.key in self.origin:
                raise routing.SpecError(where, 'same destination, table and metric as %s' % self.origin[route.key])
            self.origin[route.key] = where
            self.routes_present.append(route)
        for index, spec in enumerate(params['rules']):
            where, absent = 'rules[%d]' % index, spec['state'] == 'absent'
            if absent and spec.get('table') in vanished:
                continue
            rule = routing.normalize_rule(spec, names, where, require_priority=not absent)
            if absent:
                self.rules_absent.append(rule)
                continue
            if rule.selector in self.origin:
                raise routing.SpecError(where, 'priority clash with %s: same priority %d and selectors, so only the '
                                        'older rule would ever match' % (self.origin[rule.selector], rule.priority))
            self.origin[rule.selector] = where
            self.rules_present.append(rule)
        gone = dict((t.id, t.name) for t in tables if t.state == 'absent' and t.id is not None)
        for item in self.routes_present + self.rules_present:
            if item.table in gone:
                where = self.origin[item.key if isinstance(item, routing.Route) else item.selector]
                raise routing.SpecError(where + '.table', 'table %s is declared absent' % gone[item.table])

    def families(self):
        return set(item.family for item in self.routes_present + self.routes_absent
                   + self.rules_present + self.rules_absent)

    def check_against_host(self, kernel):
        """Devices must exist and preferred sources be local addresses (read only when asked for)."""
        links = kernel.ifindex()
        local = None
        for route in self.routes_present:
            where = self.origin[route.key]
            if route.dev and route.dev not in links:
                raise routing.SpecError(where + '.dev', 'unknown device %s' % route.dev)
            if route.src:
                if local is None:
                    local = set(a['attrs'].get('IFA_LOCAL') or a['attrs'].get('IFA_ADDRESS')
                                for a in kernel.dump('address'))
                if route.src not in local:
                    raise routing.SpecError(where + '.src', '%s is not an address of this host' % route.src)


def batch_file_content(declared, names):
    tables = sorted(set('%d = %s' % (item.table, names[item.table])
                        for item in declared.routes_present + declared.rules_present
                        if item.table in names and item.table not in routing.BUILTIN_TABLE_NAMES))
    lines = [
        '# Managed by liteboxd.sandbox_network.policy_routing: the routes and rules it applied, re-applied at',
        '# boot and when a device comes back. "route" lines are ip -batch commands; "rule" lines are added',
        '# when "ip rule show" lacks them. Tables by number%s' % (': ' + ', '.join(tables) if tables else '.'),
    ]
    return '\n'.join(lines + routing.batch_lines(declared.routes_present, declared.rules_present)) + '\n'


def argument_spec():
    table_spec = dict(
        name=dict(type='str', required=True),
        id=dict(type='int'),
        state=dict(type='str', choices=['present', 'absent'], default='present'),
        exclusive=dict(type='bool', default=False),
    )
    rule_spec = {
        'priority': dict(type='int'),
        'from': dict(type='str'),
        'to': dict(type='str'),
        'iif': dict(type='str'),
        'oif': dict(type='str'),
        'fwmark': dict(type='str'),
        'table': dict(type='str'),
        'action': dict(type='str', choices=list(routing.DECLARABLE_RULE_ACTIONS), default='lookup'),
        'family': dict(type='str', choices=['ipv4', 'ipv6']),
        'state': dict(type='str', choices=['present', 'absent'], default='present'),
    }
    route_spec = dict(
        dst=dict(type='str', required=True),
        type=dict(type='str', choices=list(routing.DECLARABLE_ROUTE_TYPES), default='unicast'),
        via=dict(type='str'),
        dev=dict(type='str'),
        src=dict(type='str'),
        metric=dict(type='int'),
        table=dict(type='str', default='main'),
        scope=dict(type='str', choices=list(routing.SCOPES)),
        family=dict(type='str', choices=['ipv4', 'ipv6']),
        state=dict(type='str', choices=['present', 'absent'], default='present'),
    )
    return dict(
        tables=dict(type='list', elements='dict', options=table_spec, default=[]),
        rules=dict(type='list', elements='dict', options=rule_spec, default=[]),
        routes=dict(type='list', elements='dict', options=route_spec, default=[]),
        rt_tables_dir=dict(type='path', default=routing.RT_TABLES_DIR),
        batch_file=dict(type='path'),
    )


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
    )
    if routing.netaddr is None:
        module.fail_json(msg=missing_required_lib('netaddr'), exception=str(routing.NETADDR_IMPORT_ERROR))

    rt_tables_dir, batch_file = module.params['rt_tables_dir'], module.params['batch_file']
    try:
        names = routing.read_table_names(rt_tables_dir)
        tables, names_view = routing.declare_tables(module.params['tables'], names, rt_tables_dir)
        declared = Declaration(module.params, names_view, tables)
    except routing.SpecError as exc:
        module.fail_json(msg=str(exc))

    table_names = routing.table_name_map(names_view)
    with Session() as kernel:
        try:
            declared.check_against_host(kernel)
        except routing.SpecError as exc:
            module.fail_json(msg=str(exc))
        families = declared.families() | (set(routing.FAMILIES) if tables else set())
        family = routing.FAMILIES[families.pop()] if len(families) == 1 else 0
        ifnames = kernel.ifnames()
        current_routes = [r for r in (routing.route_from_msg(m, ifnames) for m in kernel.dump('route', family)) if r]
        current_rules = [r for r in (routing.rule_from_msg(m) for m in kernel.dump('rule', family)) if r]

        # An absent table behaves as an exclusive table with nothing declared in it.
        exclusive = set(t.id for t in tables if t.id is not None and (t.exclusive or t.state == 'absent'))
        route_add, route_change, route_remove = routing.plan_routes(
            declared.routes_present, declared.routes_absent, current_routes, exclusive)
        rule_add, rule_remove = routing.plan_rules(declared.rules_present, declared.rules_absent, current_rules, exclusive)
        wanted_files = [(t.path(rt_tables_dir), t.content(), 0o644) for t in tables if t.state == 'present']
        if batch_file:
            wanted_files.append((batch_file, batch_file_content(declared, table_names), BATCH_FILE_MODE))
        files_write, files_delete = routing.plan_files(
            wanted_files, [t.path(rt_tables_dir) for t in tables if t.state == 'absent'])
        changes = routing.Changes(files_write, files_delete, route_add, route_change, route_remove,
                                  rule_add, rule_remove, declared.origin)

        result = dict(
            changed=bool(changes),
            tables=dict(written=[p for p, _c, _m in files_write if p != batch_file], removed=files_delete),
            rules=dict(added=[routing.rule_show_text(r, table_names) for r in rule_add],
                       removed=[routing.rule_show_text(r, table_names) for r in rule_remove]),
            routes=dict(added=[routing.route_text(r, table_names) for r in route_add],
                        changed=[dict(before=routing.route_text(o, table_names), after=routing.route_text(n, table_names))
                                 for o, n in route_change],
                        removed=[routing.route_text(r, table_names) for r in route_remove]),
        )
        if batch_file:
            batch_changed = any(p == batch_file for p, _c, _m in files_write)
            result['batch_file'] = dict(path=batch_file, changed=batch_changed,
                                        written=batch_changed and not module.check_mode)
        if module._diff:
            result['diff'] = _diff(tables, rt_tables_dir, batch_file, table_names, exclusive, declared,
                                   current_routes, current_rules, changes)
        if changes and not module.check_mode:
            try:
                changes.apply(kernel, lambda path, content, mode: routing.atomic_write(module, path, content, mode),
                              routing.remove_file)
            except routing.ApplyError as exc:
                module.fail_json(msg='%s; %s' % (exc, 'the changes made before it were undone' if exc.undone
                                                 else 'undoing the earlier changes failed too, check the host'),
                                 **result)
            except KernelError as exc:
                module.fail_json(msg='netlink: %s' % exc, **result)
    module.exit_json(**result)


def _diff(tables, rt_tables_dir, batch_file, table_names, exclusive, declared, current_routes, current_rules, changes):
    """Before/after of everything this task touches or declares, as ip-like text."""
    declared_keys = set(r.key for r in declared.routes_present + declared.routes_absent)
    changed_old = [old for old, _new in changes.route_change]
    before_routes = [r for r in current_routes if r.table in exclusive or r.key in declared_keys]
    after_routes = [r for r in before_routes if r not in changes.route_remove and r not in changed_old]
    after_routes += changes.route_add + [new for _old, new in changes.route_change]

    declared_rules = declared.rules_present + declared.rules_absent
    before_rules = [r for r in current_rules
                    if r in changes.rule_remove or any(routing.rule_selects(d, r) for d in declared_rules)
                    or (r.action == 'lookup' and r.table in exclusive)]
    after_rules = [r for r in before_rules if r not in changes.rule_remove] + changes.rule_add

    written = dict((path, content) for path, content, _mode in changes.files_write)
    paths = [t.path(rt_tables_dir) for t in tables] + ([batch_file] if batch_file else [])

    def files(after):
        parts = []
        for path in paths:
            content = written.get(path) if after else None
            if content is None and not (after and path in changes.files_delete):
                content = routing.read_file(path)
            if content:
                parts.append('# %s\n%s' % (path, content))
        return ''.join(parts)

    def text(routes, rules, after):
        parts = [files(after), '# ip rule\n']
        parts += ['%s\n' % routing.rule_show_text(r, table_names)
                  for r in sorted(rules, key=lambda r: (r.family, r.priority or 0, routing.rule_text(r)))]
        parts.append('# ip route\n')
        parts += ['%s\n' % routing.route_text(r, table_names) for r in sorted(routes, key=lambda r: r.key)]
        return ''.join(parts)

    return dict(before=text(before_routes, before_rules, False), after=text(after_routes, after_rules, True),
                before_header='kernel before', after_header='kernel after')


if __name__ == '__main__':
    main()
