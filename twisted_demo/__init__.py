"""Serve a Kubernetes ConfigMap file over HTTP and reload it live."""
