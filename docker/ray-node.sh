#!/usr/bin/env bash
# Entrypoint of the scalelab image for Ray nodes (docker-compose.yml: ray-head, ray-worker).
#   ray-node.sh head   [extra `ray start` flags]   start the head, in the foreground
#   ray-node.sh worker [extra `ray start` flags]   join a head (pass --address=HOST:PORT)
#   ray-node.sh health                             exit 0 when this node's raylet runs
#   ray-node.sh <anything else>                    run it (e.g. bash, scalelab run ...)
# Optional resource overrides (empty = Ray detects): SCALELAB_RAY_NUM_CPUS,
# SCALELAB_RAY_NUM_GPUS (logical GPUs, e.g. to test GPU scheduling on a CPU host),
# SCALELAB_RAY_RESOURCES (JSON, e.g. {"x": 1}).
set -euo pipefail

role="${1:-}"
case "$role" in
  head|worker) shift ;;
  health)
    for f in /proc/[0-9]*/comm; do
      [ "$(cat "$f" 2>/dev/null)" = raylet ] && exit 0
    done
    echo "no raylet process" >&2
    exit 1 ;;
  *) exec "$@" ;;
esac

export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
if [ "$RAY_AUTH_MODE" = token ]; then
  if [ -z "${RAY_AUTH_TOKEN:-}" ] || [ "${RAY_AUTH_TOKEN}" = change-me ]; then
    echo "RAY_AUTH_TOKEN is unset or still the .env.example placeholder:" \
         "generate one with 'ray get-auth-token --generate' and put it in .env" >&2
    exit 2
  fi
fi

args=(--block --disable-usage-stats)
[ -n "${SCALELAB_RAY_NUM_CPUS:-}" ] && args+=("--num-cpus=${SCALELAB_RAY_NUM_CPUS}")
[ -n "${SCALELAB_RAY_NUM_GPUS:-}" ] && args+=("--num-gpus=${SCALELAB_RAY_NUM_GPUS}")
[ -n "${SCALELAB_RAY_RESOURCES:-}" ] && args+=("--resources=${SCALELAB_RAY_RESOURCES}")

if [ "$role" = head ]; then
  exec ray start --head "${args[@]}" "$@"
else
  exec ray start "${args[@]}" "$@"
fi
