"""Shipping the models elsewhere: ``image`` (``stevedore-server build``: a container image with plugins
preinstalled, from ``container/Containerfile``) and ``manifests`` (Kubernetes and KServe manifests).

May import every layer below the commands; nothing here runs in a serving process.
"""
