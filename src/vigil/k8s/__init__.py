"""Kubernetes: pods of this node, TracingPolicy custom resources, pod-scoped policies.

- ``informer``: list + watch of one resource with the official client (resourceVersion,
  bookmarks, 410 Gone -> re-list, errors counted, bounded objects).
- ``pods``: the node's pods (a ``vigil.containers.model.PodSource``) and their containers.
- ``policies``: ``TracingPolicy`` / ``TracingPolicyNamespaced`` loaded through the policy
  manager as the file and gRPC ones are.
- ``cgroups`` / ``scopes``: container ids -> cgroup ids; which cgroups each scoped
  policy covers, kept in step in the kernel (``vigil.sensors.policyfilter``).
- ``agent``: the agent's ``--enable-k8s-api`` wiring.
"""
