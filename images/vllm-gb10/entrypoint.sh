#!/bin/bash
# Entry point of the GB10 vLLM image. Same interface as images/testbed/entrypoint.sh, so
# dgxcluster drives both alike. Modes (first argument; the rest is passed on):
#   ray-head     ray start --head on VLLM_HOST_IP:RAY_PORT (dashboard on RAY_DASHBOARD_PORT)
#   ray-worker   ray start joining RAY_HEAD_ADDRESS (host:port), as VLLM_HOST_IP
#   serve        vllm serve ARGS... (normally run with `docker exec` in the head container)
#   nccl-test    TEST [ARGS...]: one nccl-tests binary on this node, e.g.
#                nccl-test all_gather -b 1G -e 4G -f 2 -g 1 (across nodes: under mpirun)
#   shell        an interactive shell
# Anything else is executed as given. VLLM_HOST_IP must be the node's fabric address:
# Ray or vLLM picking the management or a link-local address is the classic failure.
set -euo pipefail
mode="${1:-shell}"
case "$mode" in
  ray-head)
    shift
    exec ray start --head --block --node-ip-address="${VLLM_HOST_IP:?set VLLM_HOST_IP to the fabric IP}" \
      --port="${RAY_PORT:-6379}" --dashboard-host=0.0.0.0 \
      --dashboard-port="${RAY_DASHBOARD_PORT:-8265}" --num-gpus="${RAY_NUM_GPUS:-1}" "$@" ;;
  ray-worker)
    shift
    exec ray start --block --address="${RAY_HEAD_ADDRESS:?set RAY_HEAD_ADDRESS to head-ip:port}" \
      --node-ip-address="${VLLM_HOST_IP:?set VLLM_HOST_IP to the fabric IP}" \
      --num-gpus="${RAY_NUM_GPUS:-1}" "$@" ;;
  serve)
    shift
    exec vllm serve "$@" ;;
  nccl-test)
    shift
    test="${1:-all_gather}"
    [ $# -eq 0 ] || shift
    test="${test%_perf}_perf"
    if ! command -v "$test" >/dev/null; then
      echo "nccl-test: no such test: $test (have: $(cd /opt/nccl-tests/bin && echo *_perf))" >&2
      exit 2
    fi
    exec "$test" "$@" ;;
  shell)
    exec /bin/bash ;;
  *)
    exec "$@" ;;
esac
