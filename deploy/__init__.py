"""Running alexnet_tf on several machines: a container image, Kubernetes manifests and a
single-host recipe (README, "Several machines"). Importable so that its TF_CONFIG logic is
shared by the pods' entry and the local recipe, and tested (tests/test_deploy.py)."""
