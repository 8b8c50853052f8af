#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, LiteBoxd platform team
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: sysctl_settings
short_description: Kernel parameters set now, persisted in one sysctl.d file, and the values from before kept
version_added: 0.1.0
description:
  - Sets several kernel parameters (sysctl) at once in the running kernel, writes them as the sysctl.d
    file O(path) that applies them at boot, and, with O(saved_path), records the values the host had
    before the first run, so that O(state=absent) can put them back. One task, one pass on the host.
  - Every key is checked before anything changes; a key the kernel does not have (a device that is not
    there) fails naming it. A value the kernel refuses undoes the values already set in the same run and
    writes no file, so a failed run leaves the host as it was.
  - With O(state=absent) the values recorded in O(saved_path) are set again (keys of devices that are
    gone are skipped), then O(path) and O(saved_path) are removed.
  - Check mode predicts the same changes; diff mode shows the file and the running values.
author:
  - LiteBoxd platform team (@liteboxd)
extends_documentation_fragment:
  - liteboxd.sandbox_network.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: linux
    details: Reads and writes the kernel parameters under C(/proc/sys) of the host it runs on, as root.
options:
  settings:
    description:
      - The kernel parameters and their values, keys in sysctl(8)'s notation (C(net.ipv4.ip_forward);
        a dot inside a device name is written C(/), as in C(net.ipv4.conf.eth0/100.rp_filter)).
      - Required with O(state=present).
    type: dict
  path:
    description:
      - The sysctl.d file that holds exactly O(settings) (C(key=value) lines, sorted), read by
        C(systemd-sysctl) at boot.
    type: path
    required: true
  header:
    description:
      - Comment lines written at the top of O(path) (each line gets a C(#)).
    type: str
    default: ''
  saved_path:
    description:
      - A file that records the values of O(settings) as they were before this module first set them
        (C(key=value) lines). A value recorded there is never overwritten, so it keeps what was there
        before the first run; a key added to O(settings) later is recorded on the run that first sets it.
        Its directory is created when missing.
      - With O(state=absent), the values to put back.
    type: path
  state:
    description:
      - V(present) sets, persists and records; V(absent) restores the recorded values and removes both files.
    type: str
    choices: [present, absent]
    default: present
'''

EXAMPLES = r'''
- name: Forward IPv4, now and at boot, keeping the value from before for the rollback
  liteboxd.sandbox_network.sysctl_settings:
    settings:
      net.ipv4.ip_forward: "1"
    path: /etc/sysctl.d/90-liteboxd-egress-exit.conf
    header: The egress exit forwards the tunnel's traffic to the internet.
    saved_path: /var/lib/liteboxd/egress_exit/sysctl-before.conf

- name: Put the values from before back and remove the file
  liteboxd.sandbox_network.sysctl_settings:
    path: /etc/sysctl.d/90-liteboxd-egress-exit.conf
    saved_path: /var/lib/liteboxd/egress_exit/sysctl-before.conf
    state: absent
'''

RETURN = r'''
values:
  description: The running values of the keys handled, after the run (predicted in check mode).
  returned: always
  type: dict
  sample: {"net.ipv4.ip_forward": "1"}
changed_keys:
  description: The keys whose running value was (or, in check mode, would be) set.
  returned: always
  type: list
  elements: str
  sample: [net.ipv4.ip_forward]
saved:
  description: Whether O(saved_path) was written in this run (the first run on the host, or a key new to it).
  returned: always
  type: bool
  sample: true
'''

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.liteboxd.sandbox_network.plugins.module_utils import sysctl
from ansible_collections.liteboxd.sandbox_network.plugins.module_utils.routing import atomic_write, read_file

FILE_MODE = 0o644


def set_values(module, wanted, before):
    """Set ``wanted`` in the running kernel; on a refusal put back what was set and fail."""
    done = []
    for key in sorted(wanted):
        try:
            sysctl.write_value(key, wanted[key])
        except (IOError, OSError) as exc:
            for earlier in done:
                try:
                    sysctl.write_value(earlier, before[earlier])
                except (IOError, OSError):
                    pass
            module.fail_json(msg='settings: the kernel refused %s = %s (%s); the values set before it were put back'
                             ' and no file was written' % (key, wanted[key], exc.strerror or exc),
                             values=before, changed_keys=[], saved=False)
        done.append(key)


def values_text(values):
    return ''.join('%s=%s\n' % (key, values[key]) for key in sorted(values))


def present(module):
    params = module.params
    settings = params['settings']
    if not settings:
        module.fail_json(msg='settings: give at least one kernel parameter with state=present')
    bad = sorted(key for key, value in settings.items()
                 if not sysctl.KEY_RE.match(key) or value is None or isinstance(value, (dict, list))
                 or not sysctl.normalized(value))
    if bad:
        module.fail_json(msg='settings: %s: give keys in sysctl notation (net.ipv4.ip_forward) with a'
                         ' non-empty scalar value each' % ', '.join(bad))
    wanted = dict((key, sysctl.normalized(value)) for key, value in settings.items())
    before, missing = sysctl.read_values(wanted)
    if missing:
        module.fail_json(msg='settings: this host\'s kernel has no %s (%s): is the device there, or the module'
                         ' that provides it loaded? Nothing was changed'
                         % (', '.join(missing), ', '.join(sysctl.proc_path(key) for key in missing)))
    changed_keys = sorted(key for key in wanted if before[key] != wanted[key])
    file_before = read_file(params['path'])
    file_after = sysctl.render_file(wanted, params['header'])
    recorded = sysctl.parse_file(read_file(params['saved_path']) or '') if params['saved_path'] else {}
    save = bool(params['saved_path']) and any(key not in recorded for key in wanted)
    changed = bool(changed_keys) or file_before != file_after or save
    if changed and not module.check_mode:
        set_values(module, dict((key, wanted[key]) for key in changed_keys), before)
        if save:
            atomic_write(module, params['saved_path'], sysctl.render_file(
                dict(before, **recorded), 'The values before %s was first applied (restored on rollback).'
                % params['path']), FILE_MODE)
        if file_before != file_after:
            atomic_write(module, params['path'], file_after, FILE_MODE)
    if os.path.exists(params['path']):  # in check mode this only reports a mode to fix
        changed = module.set_mode_if_different(params['path'], '0644', changed)
    result = dict(changed=changed, values=wanted, changed_keys=changed_keys, saved=save)
    if module._diff:
        result['diff'] = [
            dict(before_header=params['path'], after_header=params['path'],
                 before=file_before or '', after=file_after),
            dict(before_header='running kernel', after_header='running kernel',
                 before=values_text(before), after=values_text(wanted)),
        ]
    module.exit_json(**result)


def absent(module):
    params = module.params
    saved_text = read_file(params['saved_path']) if params['saved_path'] else None
    saved = sysctl.parse_file(saved_text or '')
    # Keys of devices that are gone went with them.
    before, _gone = sysctl.read_values(saved)
    restore = dict((key, saved[key]) for key in before if before[key] != saved[key])
    file_before = read_file(params['path'])
    removed = [path for path in (params['path'], params['saved_path']) if path and os.path.exists(path)]
    changed = bool(restore) or bool(removed)
    if changed and not module.check_mode:
        set_values(module, restore, before)
        for path in removed:
            os.remove(path)
    after = dict(before, **restore)
    result = dict(changed=changed, values=after, changed_keys=sorted(restore), saved=False)
    if module._diff:
        result['diff'] = [
            dict(before_header=params['path'], after_header=params['path'],
                 before=file_before or '', after=''),
            dict(before_header='running kernel', after_header='running kernel',
                 before=values_text(before), after=values_text(after)),
        ]
    module.exit_json(**result)


def argument_spec():
    return dict(
        settings=dict(type='dict'),
        path=dict(type='path', required=True),
        header=dict(type='str', default=''),
        saved_path=dict(type='path'),
        state=dict(type='str', choices=['present', 'absent'], default='present'),
    )


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True,
                           required_if=[('state', 'present', ['settings'])])
    if module.params['state'] == 'present':
        present(module)
    else:
        absent(module)


if __name__ == '__main__':
    main()
