"""The test node: a kubelet stand-in that runs the pods bound to it as local processes.

It registers Nodes with the API server, keeps their Leases fresh, runs each pod's
containers as processes (each in its own mount namespace, chrooted into a root made of
the host's system directories, the pod's volumes bind-mounted at their mount paths),
reports kubelet-shaped status and serves the kubelet's containerLogs API over HTTPS.
What it does not do is listed in docs/cluster.md.
"""
