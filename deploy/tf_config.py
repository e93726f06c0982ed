"""TF_CONFIG for a multi-worker run, in the form alexnet_tf.distribute reads it.

The cluster has only "worker" tasks; worker 0 is the chief, the one process that
writes the run directory (`alexnet_tf.distribute.is_chief`).

As a program it is the entry of each pod of the Indexed Job in deploy/k8s/train.yaml:

    python -m deploy.tf_config -- python -m alexnet_tf.train --strategy=multi_worker ...

It builds TF_CONFIG from the pod's JOB_COMPLETION_INDEX (set by Kubernetes) and the
NUM_WORKERS, JOB_NAME, SERVICE_NAME and WORKER_PORT the manifest sets, prints it, and
replaces itself with the command.
"""

import json
import os
import sys

# The variables the pod entry reads; JOB_COMPLETION_INDEX comes from Kubernetes itself.
ENVIRONMENT = ("JOB_COMPLETION_INDEX", "NUM_WORKERS", "JOB_NAME", "SERVICE_NAME", "WORKER_PORT")


def tf_config(workers, index):
    """The TF_CONFIG (a JSON string) of worker `index` of a cluster of `workers` ("host:port")."""
    workers = list(workers)
    if not 0 <= index < len(workers):
        raise ValueError(f"worker index {index} is outside the cluster's {len(workers)} workers")
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})


def indexed_job_workers(job_name, service_name, port, count):
    """The workers' addresses in an Indexed Job whose pods have `subdomain: service_name`.

    Kubernetes names pod i's host `<job>-<i>`, and a headless Service called like the
    pods' subdomain gives it the DNS name `<job>-<i>.<service>`: stable across a pod's
    restarts, unlike its IP, and known before the other pods exist.
    """
    return [f"{job_name}-{index}.{service_name}:{port}" for index in range(count)]


def from_environment(environ):
    """This pod's TF_CONFIG, from the Indexed Job's variables in `environ`."""
    missing = [name for name in ENVIRONMENT if not environ.get(name)]
    if missing:
        raise ValueError(f"missing environment variable(s) {', '.join(missing)} (deploy/k8s/train.yaml sets them)")
    try:
        index, count, port = (int(environ[name]) for name in ("JOB_COMPLETION_INDEX", "NUM_WORKERS", "WORKER_PORT"))
    except ValueError:
        raise ValueError("JOB_COMPLETION_INDEX, NUM_WORKERS and WORKER_PORT must be integers") from None
    workers = indexed_job_workers(environ["JOB_NAME"], environ["SERVICE_NAME"], port, count)
    return tf_config(workers, index)


def main(argv):
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        print("usage: python -m deploy.tf_config -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    command = argv[argv.index("--") + 1 :]
    try:
        config = from_environment(os.environ)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"TF_CONFIG={config}", flush=True)
    # exec rather than a child process: the trainer becomes the container's main process,
    # so the SIGTERM Kubernetes sends on eviction reaches it and it stops cleanly.
    os.execvpe(command[0], command, {**os.environ, "TF_CONFIG": config})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
