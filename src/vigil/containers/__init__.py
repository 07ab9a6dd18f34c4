"""Container and pod metadata for process events.

Containers are learnt from the runtime (an OCI createContainer hook calling the agent's
``RuntimeHook`` RPC) and matched to processes by cgroup; pod metadata comes from the
container's CRI labels, or from a :class:`~vigil.containers.model.PodSource` when one is
given (the Kubernetes API client).
"""
