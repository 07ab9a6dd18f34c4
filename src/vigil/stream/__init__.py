"""The event stream: ring-buffer records -> process-cache updates and Tetragon events
(``pipeline``), policy-hook records (``policy_events``), per-cgroup throttling
(``throttle``) and the fan-out of event batches to subscribers (``hub``). Pure logic:
no ctypes, no kernel access."""
