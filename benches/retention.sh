#!/usr/bin/env bash
# Three simulated weeks of hourly snapshots under the seed's S3 policy, against
# tar.gz copies under the same policy (issue #10). Writes
# benches/results/retention.{csv,md,png}.
#
#   benches/retention.sh [HOURS=504] [MIB=128] [BLOCKS_PER_HOUR=20] [CHURN_KEYS_PER_HOUR=3000]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=../.ci/rocksdb-env.sh
source .ci/rocksdb-env.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/blocksnap-target}"
out=benches/results
mkdir -p "$out"
cargo bench --locked -p blocksnap-engine --bench retention -- \
  "${1:-504}" "${2:-128}" "${3:-20}" "${4:-3000}" "$PWD/$out/retention.csv" | tee "$out/retention.md"
venv="$HOME/.cache/blocksnap-plot"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" && "$venv/bin/pip" install -q matplotlib
fi
"$venv/bin/python" - "$out/retention.csv" "$out/retention.png" <<'PY'
import csv, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
rows = list(csv.DictReader(open(sys.argv[1])))
days = [int(r["hour"]) / 24 for r in rows]
gib = lambda k: [int(r[k]) / 2**30 for r in rows]
fig, ax = plt.subplots(figsize=(8, 4.5))
ax.plot(days, gib("tarballs_bytes"), label="tar.gz copies kept (seed's policy)")
ax.plot(days, gib("repo_bytes"), label="blocksnap repository (forget + prune daily)")
ax.plot(days, gib("node_bytes"), label="node data directory", linestyle=":")
ax.set_xlabel("simulated days of hourly snapshots")
ax.set_ylabel("GiB")
ax.set_title("15 days + one a day forever: storage over time")
ax.legend()
ax.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
PY
echo "wrote $out/retention.csv, $out/retention.md, $out/retention.png"
