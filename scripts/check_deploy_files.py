#!/usr/bin/env python3
"""What can be checked of the Cloud Run deployment without Google Cloud.

cloudbuild.yaml and docker/cloudrun-service.yaml never run here (nothing
reaches Google Cloud from this machine). This checks what can go wrong
before they do: both parse as YAML; the deploy step fills every placeholder
of the service file from a substitution that exists; the filled service is a
Knative Service on gen2 whose environment names only variables pyexec knows
(docs/configuration.md, which a test holds to `pyexec --help`); its
concurrency is the jobs plus the queue; the fleet's connections to Cloud SQL
(max instances x PYEXEC_DATABASE_POOL) stay under what the documented tier
allows; and the database URL comes from a secret, never inline.

Needs PyYAML: /opt/pyexec/tools-venv/bin/python3 (setup.sh installs it).
"""

import os
import re
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Cloud SQL's max_connections on the tier the docs name (db-custom-1-3840),
# less room for `pyexec keys` and maintenance.
CONNECTION_BUDGET = 100 - 10


def fail(message):
    print(f"check_deploy_files: {message}", file=sys.stderr)
    sys.exit(1)


def known_variables():
    table = open(os.path.join(ROOT, "docs", "configuration.md"), encoding="utf-8").read()
    return set(re.findall(r"^\| `([A-Z_]+)` \|", table, re.M))


def main():
    build = yaml.safe_load(open(os.path.join(ROOT, "cloudbuild.yaml"), encoding="utf-8"))
    substitutions = dict(build["substitutions"])
    substitutions.update({"PROJECT_ID": "example-project", "BUILD_ID": "0"})
    deploy = next(step for step in build["steps"] if step.get("id") == "deploy")
    script = deploy["args"][-1]
    pairs = re.findall(r'-e "s\|@([A-Z_]+)@\|([^|]*)\|g"', script)
    if not pairs:
        fail("the deploy step fills no placeholder")

    def expand(value):
        def one(match):
            name = match.group(1) or match.group(2)
            if name not in substitutions:
                fail(f"the deploy step uses ${{{name}}}, which is no substitution")
            return str(substitutions[name])
        # Substitutions may name others (${PROJECT_ID} in _CLOUDSQL_INSTANCE).
        for _ in range(3):
            value = re.sub(r"\$\{([A-Z_]+)\}|\$([A-Z_]+)", one, value)
        return value

    template = open(os.path.join(ROOT, "docker", "cloudrun-service.yaml"), encoding="utf-8").read()
    body = "\n".join(line for line in template.splitlines() if not line.lstrip().startswith("#"))
    for placeholder, value in pairs:
        body = body.replace(f"@{placeholder}@", expand(value))
    left = re.findall(r"@[A-Z_]+@", body)
    if left:
        fail(f"placeholders the deploy step does not fill: {sorted(set(left))}")
    service = yaml.safe_load(body)
    if service.get("kind") != "Service" or not service["apiVersion"].startswith("serving.knative.dev/"):
        fail("docker/cloudrun-service.yaml is not a Knative Service")
    template_spec = service["spec"]["template"]
    annotations = template_spec["metadata"]["annotations"]
    if annotations.get("run.googleapis.com/execution-environment") != "gen2":
        fail("the service must run on gen2 (gen1 is gVisor, where nsjail cannot work)")
    if "run.googleapis.com/cloudsql-instances" not in annotations:
        fail("the service names no Cloud SQL instance for the keys' store")
    container = template_spec["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    unknown = {name for name in env if name not in known_variables()}
    if unknown:
        fail(f"the service sets variables pyexec does not read: {sorted(unknown)}")
    if "value" in env.get("PYEXEC_DATABASE_URL", {}):
        fail("PYEXEC_DATABASE_URL holds a password: it must come from a secret, not a value")
    if env.get("PYEXEC_AUTH", {}).get("value") != "keys":
        fail("a fleet on Cloud Run runs with PYEXEC_AUTH=keys")
    jobs = int(env["PYEXEC_MAX_JOBS"]["value"])
    queue = int(env["PYEXEC_QUEUE_MAX"]["value"])
    concurrency = template_spec["spec"]["containerConcurrency"]
    if concurrency != jobs + queue:
        fail(f"containerConcurrency {concurrency} is not jobs + queue ({jobs} + {queue})")
    instances = int(annotations["autoscaling.knative.dev/maxScale"])
    pool = int(env["PYEXEC_DATABASE_POOL"]["value"])
    if instances * pool > CONNECTION_BUDGET:
        fail(f"{instances} instances x {pool} connections exceed {CONNECTION_BUDGET}")
    print(
        f"deploy files: {len(pairs)} placeholders filled, {len(env)} variables known, "
        f"concurrency {concurrency} = {jobs} jobs + {queue} queued, "
        f"{instances} x {pool} = {instances * pool} database connections <= {CONNECTION_BUDGET}"
    )


if __name__ == "__main__":
    main()
