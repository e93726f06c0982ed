"""deploy/: the Kubernetes manifests against Kubernetes' own schemas (offline: the copies
kubernetes-validate bundles) and against each other and the project; the pods' TF_CONFIG;
the container build file; the single-host recipe's processes and their shutdown."""

import copy
import glob
import io
import json
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time

import kubernetes_validate
import pytest
import yaml
from absl import flags
from kubernetes_validate import utils as validate_utils
from packaging.version import Version

from alexnet_tf import config as config_lib
from alexnet_tf import distribute
from deploy import local_cluster, tf_config

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEPLOY = REPO_ROOT / "deploy"
# The oldest release the manifests are written for: the Job's podFailurePolicy rules are
# valid from 1.29 on (earlier schemas require onPodConditions in every rule).
OLDEST_KUBERNETES = "1.29"
# The schemas change little from one release to the next: checking the oldest and the newest
# bundled keeps the test fast (every release from 1.29 to 1.37 passed when this was written).
NEWEST_KUBERNETES = validate_utils.major_minor(validate_utils.latest_version())
SUPPORTED_KUBERNETES = [OLDEST_KUBERNETES, NEWEST_KUBERNETES]
# The image name the manifests use; README's apply commands replace it with the pushed image.
IMAGE = "alexnet-tf:latest"
DATA_SERVICE_MODULE = REPO_ROOT / "alexnet_tf" / "data_service.py"


def load_manifests():
    """{(kind, name): resource} for every document in deploy/k8s/*.yaml."""
    resources = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for resource in yaml.safe_load_all(path.read_text()):
            key = (resource["kind"], resource["metadata"]["name"])
            assert key not in resources, f"{key} defined twice"
            resources[key] = resource
    return resources


MANIFESTS = load_manifests()


def resource(kind, name):
    return MANIFESTS[(kind, name)]


def pod_spec(workload):
    return workload["spec"]["template"]["spec"]


def pod_specs():
    """The pod spec of every Pod and workload (Job, Deployment, StatefulSet) in the manifests."""
    for workload in MANIFESTS.values():
        if workload["kind"] == "Pod":
            yield workload["spec"]
        elif workload["kind"] in ("Job", "Deployment", "StatefulSet"):
            yield pod_spec(workload)


def container(workload, name):
    (found,) = [c for c in pod_spec(workload)["containers"] if c["name"] == name]
    return found


def flag_values(argv):
    """{name: value} of the `--name=value` arguments."""
    return dict(arg[2:].split("=", 1) for arg in argv if arg.startswith("--") and "=" in arg)


def env_values(c):
    return {e["name"]: e.get("value") for e in c.get("env", [])}


def env_field(c, name):
    (entry,) = [e for e in c.get("env", []) if e["name"] == name]
    return entry["valueFrom"]["fieldRef"]["fieldPath"]


def service_port(service):
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == port["port"]
    return port["port"]


def assert_selects(service, workload):
    selector = service["spec"]["selector"]
    labels = workload["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items(), f"Service {service['metadata']['name']} does not select its pods"


def mount_path(workload, container_name, claim):
    """Where `container_name` mounts the PersistentVolumeClaim `claim`."""
    (volume,) = [v["name"] for v in pod_spec(workload)["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == claim]
    (mount,) = [m for m in container(workload, container_name)["volumeMounts"] if m["name"] == volume]
    return mount


# ---------------------------------------------------------------------------- the schemas


def test_the_manifests_are_the_expected_objects():
    assert sorted(MANIFESTS) == [
        ("Deployment", "alexnet-data-worker"),
        ("Job", "alexnet-train"),
        ("PersistentVolumeClaim", "alexnet-data"),
        ("PersistentVolumeClaim", "alexnet-experiments"),
        ("Pod", "alexnet-shell"),
        ("Service", "alexnet-data-dispatcher"),
        ("Service", "alexnet-data-worker"),
        ("Service", "alexnet-train"),
        ("StatefulSet", "alexnet-data-dispatcher"),
    ]
    assert Version(NEWEST_KUBERNETES) > Version(OLDEST_KUBERNETES)


@pytest.mark.parametrize("version", SUPPORTED_KUBERNETES)
def test_every_manifest_is_valid_for_each_supported_kubernetes(version):
    # strict: an unknown (e.g. misspelt) field is an error, as the API server's field validation makes it.
    for resource in MANIFESTS.values():
        assert kubernetes_validate.validate(resource, version, strict=True) == version


def misspelt_field(job):
    spec = pod_spec(job)
    spec["restartpolicy"] = spec.pop("restartPolicy")


def wrong_type(job):
    job["spec"]["parallelism"] = "two"


def missing_container_name(job):
    del container(job, "trainer")["name"]


def env_without_name(job):
    container(job, "trainer")["env"].append({"value": "1"})


@pytest.mark.parametrize("breakage", [misspelt_field, wrong_type, missing_container_name, env_without_name])
def test_a_broken_manifest_fails_validation(breakage):
    job = resource("Job", "alexnet-train")
    broken = copy.deepcopy(job)
    breakage(broken)
    assert broken != job
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, OLDEST_KUBERNETES, strict=True)


def test_an_unknown_kind_is_not_passed_over():
    # The command-line tool only warns about a kind it has no schema for; the library call raises.
    unknown = {"apiVersion": "kubeflow.org/v1", "kind": "TFJob", "metadata": {"name": "x"}, "spec": {}}
    with pytest.raises(validate_utils.SchemaNotFoundError):
        kubernetes_validate.validate(unknown, OLDEST_KUBERNETES, strict=True)


# ---------------------------------------------------------------------------- the wiring


def test_the_job_runs_multi_worker_training_with_tf_config_from_the_completion_index(monkeypatch):
    job, service = resource("Job", "alexnet-train"), resource("Service", "alexnet-train")
    trainer = container(job, "trainer")
    env = env_values(trainer)
    workers = int(env["NUM_WORKERS"])
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == workers >= 2
    assert trainer["command"] == ["python", "-m", "deploy.tf_config", "--"]
    assert trainer["args"][:3] == ["python", "-m", "alexnet_tf.train"]
    assert flag_values(trainer["args"])["strategy"] == "multi_worker"
    # The peers' names: the headless Service named like the pods' subdomain, on the worker port.
    assert pod_spec(job)["subdomain"] == env["SERVICE_NAME"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    assert_selects(service, job)
    assert service_port(service) == int(env["WORKER_PORT"]) == trainer["ports"][0]["containerPort"]
    assert env_field(trainer, "JOB_NAME") == "metadata.labels['batch.kubernetes.io/job-name']"
    assert "JOB_COMPLETION_INDEX" not in env  # Kubernetes sets it in each pod of an Indexed Job

    for index in range(workers):
        pod_env = {**env, "JOB_NAME": job["metadata"]["name"], "JOB_COMPLETION_INDEX": str(index)}
        config = json.loads(tf_config.from_environment(pod_env))
        # Kubernetes names pod i's host <job>-<i>; with the subdomain it is <job>-<i>.<service>.
        assert config["cluster"] == {
            "worker": [f"alexnet-train-{i}.alexnet-train:{env['WORKER_PORT']}" for i in range(workers)]
        }
        monkeypatch.setenv("TF_CONFIG", json.dumps(config))
        assert distribute.is_chief() is (index == 0)
        assert distribute.worker_index() == index and distribute.num_workers() == workers


def test_the_job_gives_the_trainer_flags_it_defines_and_its_volumes():
    job = resource("Job", "alexnet-train")
    trainer = container(job, "trainer")
    given = flag_values(trainer["args"])
    defined = flags.FlagValues()
    config_lib.define_flags(defined)
    unknown = set(given) - set(defined) - {"flagfile", "data_service"}
    assert not unknown, f"alexnet_tf.train defines no {sorted(unknown)}"
    flagfile = REPO_ROOT / given["flagfile"]
    assert flagfile.is_file()
    assert flagfile.relative_to(REPO_ROOT).match("experiments/*.flags")  # the files the image copies
    # Every worker reads the run (a restarted one resumes from the chief's state): one shared volume.
    experiments = mount_path(job, "trainer", "alexnet-experiments")
    assert given["experiments_dir"] == experiments["mountPath"] and not experiments.get("readOnly")
    assert given["data_dir"].startswith(mount_path(job, "trainer", "alexnet-data")["mountPath"] + "/")
    claims = {v["persistentVolumeClaim"]["claimName"] for spec in pod_specs() for v in spec.get("volumes", []) if "persistentVolumeClaim" in v}
    assert claims == {"alexnet-data", "alexnet-experiments"}
    for claim in claims:
        assert resource("PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteMany"]


def test_the_data_service_is_wired_to_its_services_and_the_trainers():
    dispatcher_service = resource("Service", "alexnet-data-dispatcher")
    dispatcher_set = resource("StatefulSet", "alexnet-data-dispatcher")
    worker_service = resource("Service", "alexnet-data-worker")
    workers = resource("Deployment", "alexnet-data-worker")
    job = resource("Job", "alexnet-train")

    dispatcher = container(dispatcher_set, "dispatcher")
    dispatcher_flags = flag_values(dispatcher["command"])
    assert dispatcher["command"][:3] == ["python", "-m", "alexnet_tf.data_service"]
    assert dispatcher_flags["role"] == "dispatcher"
    port = service_port(dispatcher_service)
    assert int(dispatcher_flags["port"]) == port == dispatcher["ports"][0]["containerPort"]
    assert dispatcher["readinessProbe"]["tcpSocket"]["port"] == port
    assert dispatcher_set["spec"]["serviceName"] == dispatcher_service["metadata"]["name"]
    assert dispatcher_set["spec"]["replicas"] == 1  # tf.data service has one dispatcher
    assert_selects(dispatcher_service, dispatcher_set)
    # Its journal survives a restart: --work_dir is on the StatefulSet's own volume.
    (claim,) = dispatcher_set["spec"]["volumeClaimTemplates"]
    (mount,) = dispatcher["volumeMounts"]
    assert mount["name"] == claim["metadata"]["name"] and dispatcher_flags["work_dir"] == mount["mountPath"]

    worker = container(workers, "worker")
    worker_flags = flag_values(worker["command"])
    address = f"{dispatcher_service['metadata']['name']}:{port}"
    assert worker["command"][:3] == ["python", "-m", "alexnet_tf.data_service"]
    assert worker_flags["role"] == "worker" and worker_flags["dispatcher"] == address
    worker_port = service_port(worker_service)
    assert int(worker_flags["port"]) == worker_port == worker["ports"][0]["containerPort"]
    # The address trainers are told to use: the pod's IP, reachable from other pods.
    assert worker_flags["worker_address"] == f"$(POD_IP):{worker_port}"
    assert env_field(worker, "POD_IP") == "status.podIP"
    assert worker_service["spec"]["clusterIP"] == "None"
    assert_selects(worker_service, workers)
    # The input pipeline runs on the workers and opens the files at the trainers' paths.
    assert mount_path(workers, "worker", "alexnet-data")["mountPath"] == mount_path(job, "trainer", "alexnet-data")["mountPath"]

    assert flag_values(container(job, "trainer")["args"])["data_service"] == f"grpc://{address}"


def test_variables_in_commands_are_defined_and_every_image_is_the_project_s():
    for spec in pod_specs():
        for c in spec["containers"]:
            assert c["image"] == IMAGE
            used = set(re.findall(r"\$\((\w+)\)", " ".join(c.get("command", []) + c.get("args", []))))
            assert used <= {e["name"] for e in c.get("env", [])}, f"{c['name']} uses undefined {used}"
            assert spec["securityContext"]["runAsUser"] == spec["securityContext"]["fsGroup"] == 1000


@pytest.mark.skipif(not DATA_SERVICE_MODULE.is_file(), reason="alexnet_tf/data_service.py is not in this tree yet")
def test_the_data_service_flags_the_manifests_and_the_local_recipe_give_exist():
    from alexnet_tf import data_service

    service_flags = flags.FlagValues()
    data_service.define_flags(service_flags)
    services, _ = local_cluster.plan(1, 1, [], [7000, 7001, 7002], "/tmp/w")
    commands = [
        container(resource("StatefulSet", "alexnet-data-dispatcher"), "dispatcher")["command"],
        container(resource("Deployment", "alexnet-data-worker"), "worker")["command"],
        *(process.argv for process in services),
    ]
    for command in commands:
        missing = set(flag_values(command)) - set(service_flags)
        assert not missing, f"alexnet_tf.data_service defines no {sorted(missing)}"
    train_flags = flags.FlagValues()
    config_lib.define_flags(train_flags)
    assert "data_service" in train_flags, "alexnet_tf.train defines no --data_service"


# ---------------------------------------------------------------------------- the image


def test_the_image_copies_what_the_manifests_run():
    instructions = [
        line.split(None, 1)
        for line in (DEPLOY / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.startswith("#") and not line.startswith(" ")
    ]
    assert instructions[0] == ["FROM", "python:3.11-slim"]
    assert ["RUN", "pip install -r requirements.txt"] in instructions
    assert not [i for i in instructions if i[0] in ("CMD", "ENTRYPOINT")]  # the manifests say what to run
    copied = [i[1].split()[0] for i in instructions if i[0] == "COPY"]
    assert copied == ["requirements.txt", "alexnet_tf/", "deploy/", "experiments/*.flags"]
    kept = {line[1:] for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines() if line.startswith("!")}
    for source in copied:
        assert glob.glob(str(REPO_ROOT / source)), f"COPY {source}: nothing there"
        assert source in kept, f"the build context leaves out {source}"
    for module in ("deploy/tf_config.py", "alexnet_tf/train.py"):
        assert any(pathlib.PurePath(module).is_relative_to(source) for source in copied)


def test_the_readme_names_files_that_exist():
    readme = (REPO_ROOT / "README.md").read_text()
    named = set(re.findall(r"deploy/[\w./-]*\w", readme))
    assert {"deploy/Dockerfile", "deploy/k8s/train.yaml", "deploy/k8s/data-service.yaml"} <= named
    for path in named:
        assert (REPO_ROOT / path).exists(), path
    assert IMAGE in readme


# ---------------------------------------------------------------------------- the pods' entry


def run_entry(env, *command):
    return subprocess.run(
        [sys.executable, "-m", "deploy.tf_config", "--", *command],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_the_pod_entry_sets_tf_config_and_runs_the_command():
    env = {"JOB_COMPLETION_INDEX": "1", "NUM_WORKERS": "3", "JOB_NAME": "j", "SERVICE_NAME": "s", "WORKER_PORT": "2222"}
    result = run_entry(env, sys.executable, "-c", "import os; print(os.environ['TF_CONFIG'])")
    assert result.returncode == 0, result.stderr
    announced, seen = result.stdout.splitlines()
    expected = {"cluster": {"worker": ["j-0.s:2222", "j-1.s:2222", "j-2.s:2222"]}, "task": {"type": "worker", "index": 1}}
    assert json.loads(seen) == expected and announced == f"TF_CONFIG={seen}"


def test_the_pod_entry_refuses_a_missing_variable_or_command():
    result = run_entry({"JOB_COMPLETION_INDEX": "0", "NUM_WORKERS": "2"}, "true")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: missing environment variable(s) JOB_NAME, SERVICE_NAME, WORKER_PORT (deploy/k8s/train.yaml sets them)"
    )
    env = {"JOB_COMPLETION_INDEX": "2", "NUM_WORKERS": "2", "JOB_NAME": "j", "SERVICE_NAME": "s", "WORKER_PORT": "1"}
    assert "outside the cluster's 2 workers" in run_entry(env, "true").stderr
    assert tf_config.main([]) == 2


# ---------------------------------------------------------------------------- the single-host recipe


def test_the_local_cluster_plan(monkeypatch):
    ports = [7000, 7001, 7002, 7003, 7004, 7005]
    services, trainers = local_cluster.plan(3, 2, ["--epochs=2"], ports, "/tmp/w", python="py")
    dispatcher, *data_workers = services
    assert dispatcher.argv == ["py", "-m", "alexnet_tf.data_service", "--role=dispatcher", "--port=7003", "--work_dir=/tmp/w"]
    assert [w.argv[3:] for w in data_workers] == [
        ["--role=worker", "--dispatcher=127.0.0.1:7003", f"--port={port}", f"--worker_address=127.0.0.1:{port}"]
        for port in (7004, 7005)
    ]
    assert [s.port for s in services] == [7003, 7004, 7005]
    for index, trainer in enumerate(trainers):
        assert trainer.argv == [
            "py", "-m", "alexnet_tf.train", "--strategy=multi_worker", "--data_service=grpc://127.0.0.1:7003", "--epochs=2"
        ]  # fmt: skip
        assert json.loads(trainer.env["TF_CONFIG"]) == {
            "cluster": {"worker": ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"]},
            "task": {"type": "worker", "index": index},
        }
        monkeypatch.setenv("TF_CONFIG", trainer.env["TF_CONFIG"])
        assert distribute.is_chief() is (index == 0) and distribute.num_workers() == 3
    assert [t.name for t in trainers] == ["worker 0 (chief)", "worker 1", "worker 2"]

    services, trainers = local_cluster.plan(2, 0, [], ports, "/tmp/w", python="py")
    assert services == [] and trainers[0].argv == ["py", "-m", "alexnet_tf.train", "--strategy=multi_worker"]
    with pytest.raises(ValueError, match="sets --strategy and --data_service itself"):
        local_cluster.plan(2, 0, ["--strategy=mirrored"], ports, "/tmp/w")
    with pytest.raises(SystemExit) as usage:
        local_cluster.main(["--workers=2", "--", "--data_service=grpc://x:1"])
    assert usage.value.code == 2
    assert len(set(local_cluster.free_ports(4))) == 4


# Stand-ins for the cluster's processes: they note in a shared file when SIGTERM reaches them,
# and those given `exits=True` end with `status` once every process is ready (see run_cluster).
FAKE = """
import os, signal, sys, time
def stop(signum, frame):
    with open({log!r}, "a") as log:
        log.write({name!r} + "\\n")
    sys.exit(143)
signal.signal(signal.SIGTERM, {handler})
print("ready", flush=True)
deadline = time.monotonic() + 60
while time.monotonic() < deadline and not ({exits} and os.path.exists({go!r})):
    time.sleep(0.01)
sys.exit({status})
"""


def fake(tmp_path, name, exits=False, status=0, handler="stop"):
    code = FAKE.format(
        log=str(tmp_path / "stopped"), go=str(tmp_path / "go"), name=name, handler=handler, exits=exits, status=status
    )
    return local_cluster.Process(name, [sys.executable, "-c", code])


def stopped_order(tmp_path):
    path = tmp_path / "stopped"
    return path.read_text().split() if path.exists() else []


def run_cluster(tmp_path, services, trainers, grace_s=5.0, when_ready=None):
    """Runs a Cluster of fakes; once all have said "ready", lets the exiting ones end and calls
    `when_ready(cluster)`. Returns (status, output, seconds)."""
    output = io.StringIO()
    cluster = local_cluster.Cluster(grace_s=grace_s, output=output, poll_s=0.02)

    def act_once_all_are_ready():
        deadline = time.monotonic() + 20
        while output.getvalue().count("] ready") < len(services) + len(trainers) and time.monotonic() < deadline:
            time.sleep(0.02)
        (tmp_path / "go").touch()
        if when_ready:
            when_ready(cluster)

    threading.Thread(target=act_once_all_are_ready, daemon=True).start()
    start = time.monotonic()
    status = cluster.run(services, trainers)
    assert all(popen.poll() is not None for _, popen in cluster.started)  # nothing left running
    return status, output.getvalue(), time.monotonic() - start


def test_the_local_cluster_ends_with_its_trainers(tmp_path):
    status, output, _ = run_cluster(tmp_path, [fake(tmp_path, "dispatcher")], [fake(tmp_path, f"w{i}", exits=True) for i in range(2)])
    assert status == 0
    assert "[w0] ready" in output and "[w1] ready" in output and "[dispatcher] ready" in output
    assert stopped_order(tmp_path) == ["dispatcher"]  # the data service is stopped after the trainers


def test_a_failing_trainer_stops_the_others_and_gives_its_status(tmp_path):
    trainers = [fake(tmp_path, "w0"), fake(tmp_path, "w1", exits=True, status=3)]
    status, output, seconds = run_cluster(tmp_path, [fake(tmp_path, "dispatcher")], trainers)
    assert status == 3 and seconds < 15
    assert "local_cluster: w1 exited with status 3; stopping the others" in output
    assert stopped_order(tmp_path) == ["w0", "dispatcher"]


def test_a_stop_request_stops_the_trainers_before_the_data_service(tmp_path):
    services = [fake(tmp_path, "dispatcher"), fake(tmp_path, "data")]
    status, output, _ = run_cluster(tmp_path, services, [fake(tmp_path, "w0"), fake(tmp_path, "w1")], when_ready=lambda c: c.request_stop(signal.SIGINT))
    assert status == 130 and "local_cluster: stopping on SIGINT" in output
    assert sorted(stopped_order(tmp_path)[:2]) == ["w0", "w1"] and sorted(stopped_order(tmp_path)[2:]) == ["data", "dispatcher"]


def test_a_trainer_that_ignores_sigterm_is_killed_after_the_grace_time(tmp_path):
    stubborn = fake(tmp_path, "w0", handler="signal.SIG_IGN")
    status, output, seconds = run_cluster(tmp_path, [], [stubborn], grace_s=0.5, when_ready=lambda c: c.request_stop(signal.SIGTERM))
    assert status == 143 and "local_cluster: killing w0" in output and seconds < 10


def test_a_trainer_killed_by_a_signal_gives_the_shell_s_status(tmp_path):
    killed = fake(tmp_path, "w1", exits=True, status="os.kill(os.getpid(), signal.SIGKILL)")
    status, output, _ = run_cluster(tmp_path, [], [fake(tmp_path, "w0"), killed])
    assert status == 137 and "local_cluster: w1 exited with status -9; stopping the others" in output
    assert stopped_order(tmp_path) == ["w0"]


def test_a_data_service_process_that_dies_stops_the_run(tmp_path):
    status, output, _ = run_cluster(tmp_path, [fake(tmp_path, "dispatcher", exits=True, status=1)], [fake(tmp_path, "w0")])
    assert status == 1 and "local_cluster: dispatcher exited with status 1 during training; stopping" in output
    assert stopped_order(tmp_path) == ["w0"]
