# -*- coding: utf-8 -*-
# Copyright: (c) 2026, LiteBoxd platform team
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kernel parameters (sysctl): their files under /proc/sys, the sysctl.d file that persists them and
the record of the values a host had before, read and written in one pass."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

PROC_SYS = '/proc/sys'
# sysctl(8)'s notation: dots separate the levels; a dot inside a name (eth0.100) is written '/'.
KEY_RE = re.compile(r'^[A-Za-z0-9_/:@+-]+(\.[A-Za-z0-9_/:@+-]+)+$')


def proc_path(key):
    """The /proc/sys file of ``key`` in sysctl(8)'s notation (``net.ipv4.conf.eth0/100.rp_filter``)."""
    return os.path.join(PROC_SYS, *[part.replace('/', '.') for part in key.split('.')])


def normalized(value):
    """A value as the kernel prints it, for comparison: fields separated by one space."""
    return ' '.join(str(value).split())


def read_values(keys):
    """{key: current value} for the keys whose /proc/sys file exists, and the keys that have none."""
    values, missing = {}, []
    for key in keys:
        try:
            with open(proc_path(key)) as handle:
                values[key] = normalized(handle.read())
        except (IOError, OSError):
            missing.append(key)
    return values, missing


def write_value(key, value):
    with open(proc_path(key), 'w') as handle:
        handle.write(normalized(value) + '\n')


def render_file(values, header=''):
    """A sysctl.d file: the header as comments, then ``key=value`` lines sorted by key."""
    lines = ['# ' + line if line else '#' for line in header.splitlines()]
    lines += ['%s=%s' % (key, normalized(values[key])) for key in sorted(values)]
    return '\n'.join(lines) + '\n'


def parse_file(text):
    """{key: value} of a sysctl.d file's ``key = value`` (or ``key=value``) lines; comments skipped."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in '#;' or '=' not in line:
            continue
        key, value = line.split('=', 1)
        values[key.strip().lstrip('-')] = normalized(value)
    return values
