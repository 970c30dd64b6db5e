#!/bin/bash
# Entry point of the testbed image (same modes as images/vllm-gb10).
# Modes: ray-head | ray-worker | serve | shell; anything else is executed as given.
set -euo pipefail
mode="${1:-shell}"
case "$mode" in
  ray-head)
    shift
    exec ray start --head --block --node-ip-address="${VLLM_HOST_IP:?}" --port="${RAY_PORT:-6379}" \
      --dashboard-host=0.0.0.0 --dashboard-port="${RAY_DASHBOARD_PORT:-8265}" \
      --num-gpus="${RAY_NUM_GPUS:-1}" "$@" ;;
  ray-worker)
    shift
    exec ray start --block --address="${RAY_HEAD_ADDRESS:?}" --node-ip-address="${VLLM_HOST_IP:?}" \
      --num-gpus="${RAY_NUM_GPUS:-1}" "$@" ;;
  serve)
    shift
    exec vllm serve "$@" ;;
  shell)
    exec /bin/bash ;;
  *)
    exec "$@" ;;
esac
