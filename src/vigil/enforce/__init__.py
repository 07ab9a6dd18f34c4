"""Enforcement that stops the operation on kernels without BPF LSM.

- ``rules``: the user-space half of fanotify enforcement: selectors -> decision. Pure.
- ``marks``: what to mark so that only what the rules name is asked about. Pure.
- ``elf``: is this exec-open a dynamic loader used as an interpreter? Pure.
- ``decider``: the process that owns the fanotify groups and answers permission events
  (its own GIL: never waits on the agent's pipeline, exporters or network).
- ``service``: the agent's side: starts and supervises the decider, loads cgroup socket
  programs, turns the decider's reports into process_lsm events.
"""
