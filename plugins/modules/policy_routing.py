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
  - pyroute2
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
notes:
  - Works in the network namespace it runs in (for example under C(ip netns exec)).
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
'''

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.liteboxd.sandbox_network.plugins.module_utils import netlink


def _declared_tables(params, names, rt_tables_dir):
    """Validate the tables option; return (declared list, names view including them)."""
    declared = []
    view = dict(names)
    seen_names, seen_ids = {}, {}
    for index, spec in enumerate(params['tables']):
        where = 'tables[%d]' % index
        name = spec['name']
        if name in seen_names:
            raise netlink.SpecError('%s.name: %s is already declared in tables[%d]' % (where, name, seen_names[name]))
        seen_names[name] = index
        table_id = spec.get('id')
        if spec['state'] == 'present':
            if table_id is None:
                raise netlink.SpecError('%s.id is required for a present table' % where)
            if table_id in seen_ids:
                raise netlink.SpecError('%s.id: table id clash: %d is also declared for tables[%d]'
                                        % (where, table_id, seen_ids[table_id]))
            seen_ids[table_id] = index
            netlink.check_table_declaration(name, table_id, names, rt_tables_dir, where)
            view[name] = (table_id, netlink.table_file_path(name, rt_tables_dir))
        elif table_id is None and name in names:
            table_id = names[name][0]
        declared.append(dict(name=name, id=table_id, state=spec['state'], exclusive=spec['exclusive']))
    return declared, view


def _declared_items(params, names, vanished):
    """Normalise routes and rules; absent items naming a ``vanished`` table (declared absent and
    already without a name) are dropped, as nothing in the kernel can be in it any more."""
    routes_present, routes_absent, rules_present, rules_absent = [], [], [], []
    for index, spec in enumerate(params['routes']):
        where = 'routes[%d]' % index
        absent = spec['state'] == 'absent'
        if absent and spec.get('table') in vanished:
            continue
        route = netlink.normalize_route(spec, names, where, for_absent=absent)
        route['where'] = where
        (routes_absent if absent else routes_present).append(route)
    for index, spec in enumerate(params['rules']):
        where = 'rules[%d]' % index
        absent = spec['state'] == 'absent'
        if absent and spec.get('table') in vanished:
            continue
        rule = netlink.normalize_rule(spec, names, where, require_priority=not absent)
        rule['where'] = where
        (rules_absent if absent else rules_present).append(rule)
    seen = {}
    for route in routes_present:
        key = netlink.route_key(route)
        if key in seen:
            raise netlink.SpecError('%s: same destination, table and metric as %s' % (route['where'], seen[key]))
        seen[key] = route['where']
    netlink.duplicate_selectors(rules_present)
    return routes_present, routes_absent, rules_present, rules_absent


def _strip(item):
    return dict((k, v) for k, v in item.items() if k != 'where')


def _check_against_host(routes_present, links, addresses):
    local = set(a['local'] for a in addresses)
    for route in routes_present:
        if route['dev'] and route['dev'] not in links:
            raise netlink.SpecError('%s.dev: unknown device %s' % (route['where'], route['dev']))
        if route['src'] and route['src'] not in local:
            raise netlink.SpecError('%s.src: %s is not an address of this host' % (route['where'], route['src']))


def _check_tables_used(declared, routes_present, rules_present):
    gone = dict((t['id'], t['name']) for t in declared if t['state'] == 'absent' and t['id'] is not None)
    for item in routes_present + rules_present:
        if item['table'] in gone:
            raise netlink.SpecError('%s.table: table %s is declared absent' % (item['where'], gone[item['table']]))


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
        'action': dict(type='str', choices=list(netlink.DECLARABLE_RULE_ACTIONS), default='lookup'),
        'family': dict(type='str', choices=['ipv4', 'ipv6']),
        'state': dict(type='str', choices=['present', 'absent'], default='present'),
    }
    route_spec = dict(
        dst=dict(type='str', required=True),
        type=dict(type='str', choices=list(netlink.DECLARABLE_ROUTE_TYPES), default='unicast'),
        via=dict(type='str'),
        dev=dict(type='str'),
        src=dict(type='str'),
        metric=dict(type='int'),
        table=dict(type='str', default='main'),
        scope=dict(type='str', choices=list(netlink.SCOPES)),
        family=dict(type='str', choices=['ipv4', 'ipv6']),
        state=dict(type='str', choices=['present', 'absent'], default='present'),
    )
    return dict(
        tables=dict(type='list', elements='dict', options=table_spec, default=[]),
        rules=dict(type='list', elements='dict', options=rule_spec, default=[]),
        routes=dict(type='list', elements='dict', options=route_spec, default=[]),
        rt_tables_dir=dict(type='path', default=netlink.RT_TABLES_DIR),
    )


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
    )
    if not netlink.HAS_NETADDR:
        module.fail_json(msg=missing_required_lib('netaddr'), exception=str(netlink.NETADDR_IMPORT_ERROR))
    if not netlink.HAS_PYROUTE2:
        module.fail_json(msg=missing_required_lib('pyroute2'), exception=str(netlink.PYROUTE2_IMPORT_ERROR))

    rt_tables_dir = module.params['rt_tables_dir']
    try:
        names = netlink.read_table_names(rt_tables_dir)
        declared, names_view = _declared_tables(module.params, names, rt_tables_dir)
        vanished = set(t['name'] for t in declared if t['state'] == 'absent' and t['id'] is None)
        routes_present, routes_absent, rules_present, rules_absent = _declared_items(module.params, names_view, vanished)
        _check_tables_used(declared, routes_present, rules_present)
    except netlink.SpecError as exc:
        module.fail_json(msg=str(exc))

    with netlink.Netlink() as kernel:
        try:
            _check_against_host(routes_present, kernel.links(), kernel.addresses())
        except netlink.SpecError as exc:
            module.fail_json(msg=str(exc))
        families = sorted(set(i['family'] for i in routes_present + routes_absent + rules_present + rules_absent)
                          | (set(['ipv4', 'ipv6']) if declared else set()))
        current_routes = kernel.routes(families)
        current_rules = kernel.rules(families)

        # An absent table behaves as an exclusive table with nothing declared in it.
        exclusive = set(t['id'] for t in declared if t['id'] is not None and (t['exclusive'] or t['state'] == 'absent'))
        route_add, route_change, route_remove = netlink.plan_routes(
            routes_present, routes_absent, current_routes, exclusive)
        rule_add, rule_remove = netlink.plan_rules(
            [_strip(r) for r in rules_present], [_strip(r) for r in rules_absent], current_rules, exclusive)
        files_write, files_delete = netlink.plan_tables(declared, names, rt_tables_dir)

        table_names = netlink.table_name_map(names_view)
        result = dict(
            changed=bool(route_add or route_change or route_remove or rule_add or rule_remove or files_write or files_delete),
            tables=dict(written=[p for p, _c in files_write], removed=list(files_delete)),
            rules=dict(added=[netlink.format_rule(r, table_names) for r in rule_add],
                       removed=[netlink.format_rule(r, table_names) for r in rule_remove]),
            routes=dict(added=[netlink.format_route(r, table_names) for r in route_add],
                        changed=[dict(before=netlink.format_route(o, table_names), after=netlink.format_route(n, table_names))
                                 for o, n in route_change],
                        removed=[netlink.format_route(r, table_names) for r in route_remove]),
        )
        if module._diff:
            result['diff'] = _diff(declared, rt_tables_dir, table_names, exclusive, routes_present + routes_absent,
                                   rules_present + rules_absent, current_routes, current_rules,
                                   (route_add, route_change, route_remove), (rule_add, rule_remove),
                                   (files_write, files_delete))
        if result['changed'] and not module.check_mode:
            try:
                _apply(kernel, files_write, files_delete, route_add, route_change, route_remove, rule_add, rule_remove)
            except netlink.ApplyError as exc:
                module.fail_json(msg='%s; %s' % (exc, 'the changes made before it were undone' if exc.undone
                                                 else 'undoing the earlier changes failed too, check the host'),
                                 **result)
    module.exit_json(**result)


def _apply(kernel, files_write, files_delete, route_add, route_change, route_remove, rule_add, rule_remove):
    """Order keeps traffic fail-closed: names first, routes before the rules that lead to them,
    rules removed before the routes behind them."""
    journal = netlink.Journal()
    for path, content in files_write:
        previous = netlink._read(path)
        journal.run(lambda p=path, c=content: netlink.write_file(p, c),
                    lambda p=path, old=previous: netlink.restore_file(p, old), 'writing %s' % path)
    for route in route_add:
        journal.run(lambda r=route: kernel.add_route(r), lambda r=route: kernel.delete_route(r),
                    'adding route %s (%s)' % (netlink.format_route(route), route['where']))
    for old, new in route_change:
        journal.run(lambda r=new: kernel.replace_route(r), lambda r=old: kernel.replace_route(r),
                    'replacing route %s with %s (%s)' % (netlink.format_route(old), netlink.format_route(new), new['where']))
    for rule in rule_add:
        journal.run(lambda r=rule: kernel.add_rule(r), lambda r=rule: kernel.delete_rule(r),
                    'adding rule %s' % netlink.format_rule(rule))
    for rule in rule_remove:
        journal.run(lambda r=rule: kernel.delete_rule(r), lambda r=rule: kernel.add_rule(r),
                    'removing rule %s' % netlink.format_rule(rule))
    for route in route_remove:
        journal.run(lambda r=route: kernel.delete_route(r), lambda r=route: kernel.add_route(r),
                    'removing route %s' % netlink.format_route(route))
    for path in files_delete:
        previous = netlink._read(path)
        journal.run(lambda p=path: netlink.restore_file(p, None),
                    lambda p=path, old=previous: netlink.restore_file(p, old), 'removing %s' % path)


def _diff(declared, rt_tables_dir, table_names, exclusive, routes_declared, rules_declared,
          current_routes, current_rules, route_plan, rule_plan, file_plan):
    """Before/after of everything this task touches or declares, as ip-like text."""
    route_add, route_change, route_remove = route_plan
    rule_add, rule_remove = rule_plan
    files_write, files_delete = file_plan
    declared_keys = set(netlink.route_key(r) for r in routes_declared)
    changed_old = [o for o, _n in route_change]
    before_routes = [r for r in current_routes
                     if r['table'] in exclusive or netlink.route_key(r) in declared_keys]
    after_routes = [r for r in before_routes if r not in route_remove and r not in changed_old]
    after_routes += route_add + [n for _o, n in route_change]

    declared_rules = [_strip(r) for r in rules_declared]
    before_rules = [r for r in current_rules
                    if r in rule_remove or any(netlink.rule_selects(d, r) for d in declared_rules)
                    or (r['action'] == 'lookup' and r['table'] in exclusive)]
    after_rules = [r for r in before_rules if r not in rule_remove] + rule_add

    def files(after):
        lines = []
        for table in declared:
            path = netlink.table_file_path(table['name'], rt_tables_dir)
            content = dict(files_write).get(path) if after else None
            if content is None and not (after and path in files_delete):
                content = netlink._read(path)
            if content:
                lines.append('# %s\n%s' % (path, content))
        return ''.join(lines)

    def text(routes, rules, after):
        parts = [files(after), '# ip rule\n']
        parts += ['%s\n' % netlink.format_rule(r, table_names) for r in sorted(rules, key=_rule_order)]
        parts.append('# ip route\n')
        parts += ['%s\n' % netlink.format_route(r, table_names) for r in sorted(routes, key=_route_order)]
        return ''.join(parts)

    return dict(before=text(before_routes, before_rules, False), after=text(after_routes, after_rules, True),
                before_header='kernel before', after_header='kernel after')


def _route_order(route):
    return (route['family'], route['table'], route['dst'], route['metric'])


def _rule_order(rule):
    return (rule['family'], rule['priority'] or 0, netlink.format_rule(rule))


if __name__ == '__main__':
    main()
