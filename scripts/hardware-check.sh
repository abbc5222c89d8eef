#!/usr/bin/env bash
# Read-only hardware check: what nvidia-smi says next to what inventory.node.nvml.NvmlSource reads.
# Run from the repository root on a machine with a real NVIDIA GPU. It only queries: no -mig, no -r,
# no -pm, nothing that changes a GPU setting. Files go to ${OUT:-/tmp/hw}.
# Exit 0: every field matches; 1: some DIFF; 2: could not run (no pynvml, no driver).
# Without network, point PYNVML_DIR at a directory holding pynvml.py or an nvidia-ml-py wheel
# (pure Python, importable straight from the .whl).
set -u
out="${OUT:-/tmp/hw}"
mkdir -p "$out"
py="${PYTHON:-python3}"
extra=""
if [ -n "${PYNVML_DIR:-}" ]; then
  extra="$PYNVML_DIR"
  for wheel in "$PYNVML_DIR"/*.whl; do [ -e "$wheel" ] && extra="$extra:$wheel"; done
fi
export PYTHONPATH="$(pwd)${extra:+:$extra}${PYTHONPATH:+:$PYTHONPATH}"

echo "== nvidia-smi -L"
nvidia-smi -L 2>&1 | tee "$out/nvidia-smi-L.txt"
echo "== nvidia-smi -q"
nvidia-smi -q > "$out/nvidia-smi-q.txt" 2>&1 || echo "nvidia-smi -q failed (see $out/nvidia-smi-q.txt)"
cat "$out/nvidia-smi-q.txt"
echo "== nvidia-smi --query-gpu"
fields=index,uuid,name,memory.total,memory.used,temperature.gpu,utilization.gpu,power.draw
fields=$fields,mig.mode.current,mig.mode.pending,driver_version
nvidia-smi --query-gpu="$fields" --format=csv 2>&1 | tee "$out/nvidia-smi.csv"

if ! "$py" -c 'import pynvml' 2>/dev/null; then
  echo "pynvml missing: trying pip install --user nvidia-ml-py"
  "$py" -m pip install --quiet --user nvidia-ml-py 2>&1 | tail -2
  if ! "$py" -c 'import pynvml' 2>/dev/null; then
    echo "ERROR: cannot import pynvml (no network?); set PYNVML_DIR to a directory with pynvml.py or its wheel" >&2
    exit 2
  fi
fi

echo "== NvmlSource"
"$py" - "$out" <<'EOF'
import csv, dataclasses, json, re, sys
from inventory.node.nvml import NvmlSource
from inventory.domain.readings import NvmlError

out = sys.argv[1]
try:
    source = NvmlSource()
except NvmlError as error:
    print(f"ERROR: {error}", file=sys.stderr)
    sys.exit(2)  # not 1, which means DIFF
with source:
    host = source.read()
    with open(f"{out}/nvml-reading.json", "w") as f:
        json.dump(dataclasses.asdict(host), f, indent=2)
    print(json.dumps(dataclasses.asdict(host), indent=2))
    events = source.poll_events(2.0)
    print(f"XID events in 2 s: {len(events)}", [dataclasses.asdict(e) for e in events])

with open(f"{out}/nvidia-smi.csv") as f:  # headers like "memory.total [MiB]", values like "81559 MiB"
    rows = [{k.split(" ")[0]: v.strip() for k, v in r.items()} for r in csv.DictReader(f, skipinitialspace=True)]
migs, gpu = {}, None  # nvidia-smi -L: "  MIG 1g.10gb     Device  0: (UUID: MIG-...)" under "GPU 0: ..."
for line in open(f"{out}/nvidia-smi-L.txt"):
    if m := re.match(r"GPU (\d+):", line):
        gpu = int(m.group(1))
    elif (m := re.search(r"MIG (\S+)\s+Device\s+\d+: \(UUID: (MIG-[^)]+)\)", line)) and gpu is not None:
        migs.setdefault(gpu, []).append((m.group(1), m.group(2)))

diffs = 0
def compare(what, smi, nvml):
    global diffs
    same = str(smi) == str(nvml)
    diffs += not same
    print(f"  {what:<14} {str(smi):<44} {str(nvml):<44} {'MATCH' if same else 'DIFF'}")

print(f"\n  {'field':<14} {'nvidia-smi':<44} {'NvmlSource':<44}")
readings = {g.index: g for g in host.gpus}
for row in rows:
    g = readings.get(int(row["index"]))
    print(f"GPU {row['index']}" + (f"  error: {g.error}" if g and g.error else ""))
    if g is None:
        compare("present", "yes", "no")
        continue
    compare("name", row["name"], g.name)
    compare("uuid", row["uuid"], g.uuid)
    compare("memory MiB", row["memory.total"].split()[0], g.memory_total_mib)
    compare("MIG current", row["mig.mode.current"] == "Enabled", g.mig_enabled)
    compare("MIG after reset", row["mig.mode.pending"] == "Enabled", bool(g.mig_enabled_after_reset))
    compare("MIG change pending", row["mig.mode.pending"] != row["mig.mode.current"], g.mig_pending)
    compare("MIG devices", sorted(migs.get(g.index, [])), sorted((m.profile, m.uuid) for m in g.mig_devices))
compare("driver", rows[0]["driver_version"] if rows else "?", host.driver_version)
print(f"\n{'all MATCH' if not diffs else f'{diffs} DIFF'}; files in {out}")
sys.exit(1 if diffs else 0)
EOF
rc=$?

echo "== kgm agent --once (the real command, real NVML)"
"$py" -m kgm.cli agent --once --node-name "$(hostname)" > "$out/agent-once.json" 2> "$out/agent-once.err"
echo "kgm agent --once exited $?"
cat "$out/agent-once.json" "$out/agent-once.err"

echo "== the agent loop for a few seconds against an in-memory store, and the cost of one reading"
"$py" - <<'PY'
import threading, time
from inventory.node.agent import Agent, AgentSettings, InMemoryGpuNodeStore
from inventory.domain.catalogue import builtin_catalogue
from inventory.domain.health import HealthTracker
from inventory.node.nvml import NvmlSource

with NvmlSource() as source:
    started = time.perf_counter()
    for _ in range(20):
        source.read()
    print(f"NvmlSource.read(): {(time.perf_counter() - started) / 20 * 1000:.2f} ms per reading")
    store = InMemoryGpuNodeStore()
    agent = Agent(node_name="hw", source=source, store=store, assignments=None, health=HealthTracker(),
                  catalogue=builtin_catalogue(), settings=AgentSettings(interval_s=1, heartbeat_s=2))
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,))
    thread.start()
    time.sleep(5)
    stop.set()
    thread.join(10)
    status = store.objects["hw"]["status"]
    print(f"agent loop: {store.writes} writes in 5 s, generation {status['heartbeatGeneration']},",
          "healthy:", [g["healthy"] for g in status["gpus"]], "alive:", thread.is_alive())
PY
exit $rc
