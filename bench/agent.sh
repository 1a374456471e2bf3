#!/usr/bin/env bash
# Agent benchmarks (issue "The ZooKeeper-fed deployment agent"):
#  - plan computation for a tree of 10,000 deployments      (goal < 20 ms)
#  - /hosts version bump to the agent's first command, real ZooKeeper (goal < 50 ms)
# The latency part needs Debian's zookeeper package (see .ci/packages); without it, only the plan
# part runs and the script says why.
set -euo pipefail
cd "$(dirname "$0")/.."
args=()
if [ -e /usr/share/java/zookeeper.jar ]; then
  args+=(--zookeeper)
else
  echo "agent bench: /usr/share/java/zookeeper.jar missing (apt-get install zookeeper): latency skipped" >&2
fi
${CARGO:-cargo} run --quiet --release -p edeploy-agent --example agent_bench -- "${args[@]}"
