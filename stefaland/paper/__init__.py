"""``stefaland paper``: the paper's Tables 1-4 and F1 planned, run (here or as Kubernetes Jobs),
followed and rendered beside the published numbers."""
