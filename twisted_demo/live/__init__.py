"""
Live configuration for Twisted programs: follow a file, or a Kubernetes
ConfigMap or Secret volume, and swap in each valid new version atomically
on the reactor thread.
"""
