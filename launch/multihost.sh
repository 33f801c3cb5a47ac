#!/usr/bin/env bash
# Same vtg_jax.main command on every worker of a TPU VM slice or an ssh host list; see launch/README.md.
#   launch/multihost.sh --tpu=my-v5e --zone=us-west4-a --config=configs/grpo.py --workdir=gs://b/r --dry_run
#   launch/multihost.sh --hosts=node0,node1 --config=configs/grpo.py --workdir=/nfs/run
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" -m launch.multihost "$@"
