"""Shipping the models elsewhere: ``image`` (``stevedore-server build``: a container image with plugins
preinstalled, from ``container/Containerfile``), ``manifests`` (Kubernetes and KServe manifests) and
``inference_graph`` (a KServe ``InferenceGraph`` for each pipeline of the settings).

May import every layer below the commands; nothing here runs in a serving process.
"""
