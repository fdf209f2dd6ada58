"""Running StefaLand on Kubernetes: run ids, manifest builders and the API calls the CLI makes.

The manifests are built from the ``kubernetes`` client's typed models rather than from templated
YAML text, so a misspelt field is a Python error here instead of a rejected Job on the cluster.
"""
