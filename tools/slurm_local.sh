#!/usr/bin/env bash
# Prove the SLURM path for real: bring up a private single-node SLURM on this machine
# (recipe: SLURM-local.md), run a tiny NAMD target through `--profile profiles/slurm` so that
# every job goes through sbatch, print the SLURM job ids and their final state, stop the
# daemons it started (by the pids in their pid files) and exit non-zero if anything failed.
#
#   sudo PYTHON=.venv/bin/python tools/slurm_local.sh [TARGET ...]
#
# TARGET defaults to results/latents/aligned.npz: the data stage, the VAE training and the
# latent cache (6 jobs). Needs root (apt, munge user, daemons) and Debian/Ubuntu's slurm-wlm
# and munge, installed with apt-get when missing. Everything else lives in a temp folder:
# munge key and socket, state, logs and the tiny workflow run; only /etc/slurm/slurm.conf is
# written outside it (refused if one exists already) and removed at the end.
# Environment: PYTHON (an interpreter with namd, snakemake and the slurm plugin; default
# python3), NAMD_SLURM_PORT (slurmctld port, slurmd uses the next one; default 6817),
# NAMD_SLURM_KEEP=1 (keep the temp folder for inspection).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
PORT=${NAMD_SLURM_PORT:-6817}
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(results/latents/aligned.npz)

die() { echo "slurm_local: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (it installs packages and starts munged, slurmctld, slurmd)"
"$PYTHON" -c "import namd, snakemake, snakemake_executor_plugin_slurm" 2>/dev/null \
    || die "PYTHON=$PYTHON lacks namd/snakemake/snakemake-executor-plugin-slurm; point PYTHON at the project's venv"
for port in "$PORT" $((PORT + 1)); do
    # A daemon of another SLURM on this port would answer our clients: refuse instead.
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port is in use (another SLURM?); set NAMD_SLURM_PORT to a free pair of ports"
    fi
done
# slurm.conf must sit at the default path: the slurm-jobstep plugin drops SLURM_* variables,
# SLURM_CONF included, before its srun inside each job. A file we did not write is left alone.
CONF=/etc/slurm/slurm.conf
MARK="# written by NAMD tools/slurm_local.sh"
if [ -e "$CONF" ] && ! head -1 "$CONF" | grep -qF "$MARK"; then
    die "$CONF exists and is not ours: this machine has its own SLURM; use profiles/slurm there directly"
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    echo "slurm_local: installing slurm-wlm and munge with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

RUN=$(mktemp -d /tmp/namd-slurm.XXXXXX)
chmod 755 "$RUN"   # munged runs as user munge and must reach its folder below
mkdir -p "$RUN"/{state,spool,log,munge,work}

stop_daemons() {
    local rc=$? pidfile pid
    # Jobs left by a failed run would keep slurmstepd alive after slurmd stops.
    [ -e "$RUN/state/slurmctld.pid" ] && scancel --user root 2>/dev/null || true
    for pidfile in "$RUN/state/slurmd.pid" "$RUN/state/slurmctld.pid" "$RUN/munge/munged.pid"; do
        [ -s "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null || continue
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    done
    head -1 "$CONF" 2>/dev/null | grep -qF "$MARK" && rm -f "$CONF"
    if [ "${NAMD_SLURM_KEEP:-0}" = 1 ]; then echo "slurm_local: kept $RUN"; else rm -rf "$RUN"; fi
    exit "$rc"
}
trap stop_daemons EXIT

START=$(date +%s)
# munge: a fresh key and a private socket, so a munged already running here is left alone.
dd if=/dev/urandom bs=1 count=1024 of="$RUN/munge/munge.key" status=none
chown -R munge:munge "$RUN/munge"
chmod 400 "$RUN/munge/munge.key"
runuser -u munge -- munged --socket="$RUN/munge/munge.socket" --key-file="$RUN/munge/munge.key" \
    --pid-file="$RUN/munge/munged.pid" --log-file="$RUN/munge/munged.log" --seed-file="$RUN/munge/munged.seed"

HOST=$(hostname -s)
MEM=$(( $(awk '/^MemTotal/ {print $2}' /proc/meminfo) / 1024 - 2048 ))
mkdir -p /etc/slurm
cat > "$CONF" <<EOF
$MARK
ClusterName=namdlocal
SlurmctldHost=$HOST
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$RUN/munge/munge.socket
StateSaveLocation=$RUN/state
SlurmdSpoolDir=$RUN/spool
SlurmctldPidFile=$RUN/state/slurmctld.pid
SlurmdPidFile=$RUN/state/slurmd.pid
SlurmctldLogFile=$RUN/log/slurmctld.log
SlurmdLogFile=$RUN/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
# Finished jobs stay visible to squeue for a day: the plugin's only status source without sacct.
MinJobAge=86400
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=$HOST CPUs=$(nproc) RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld
slurmd
for _ in $(seq 60); do
    [ "$(sinfo -h -N -o %T 2>/dev/null)" = idle ] && break
    sleep 1
done
[ "$(sinfo -h -N -o %T 2>/dev/null)" = idle ] || { tail -20 "$RUN"/log/*.log >&2; die "node $HOST not idle after 60 s"; }
echo "slurm_local: SLURM up in $(( $(date +%s) - START )) s; sinfo:"
sinfo

# A partition this cluster lacks: sbatch would only say 'invalid partition'; name the key instead.
PARTITION=$("$PYTHON" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["default-resources"]["slurm_partition"])' \
    "$ROOT/profiles/slurm/config.yaml")
[ -n "$(sinfo -h -p "$PARTITION" -o %P)" ] \
    || die "profiles/slurm/config.yaml: default-resources slurm_partition '$PARTITION' is not a partition of this cluster (sinfo: $(sinfo -h -o %P | tr '\n' ' '))"

# The tiny overlay (phantom of 40 participants at 128 px, 2-epoch VAE...): every stage real,
# minutes on 2 CPUs. Copies, because each SLURM job reads the config files again and an edit
# of the repository's files during the run must not reach it. The Snakefile reads config.yaml
# from the working directory.
WORK=$RUN/work
cp "$ROOT/config.yaml" "$ROOT/configs/tiny.yaml" "$WORK/"

echo "slurm_local: snakemake --profile profiles/slurm ${TARGETS[*]}"
T0=$(date +%s)
set +e
# Status checks every 10 s instead of the plugin's 40: squeue on a local controller is cheap.
(cd "$WORK" && "$PYTHON" -m snakemake "${TARGETS[@]}" --snakefile "$ROOT/Snakefile" --directory "$WORK" \
    --profile "$ROOT/profiles/slurm" --slurm-init-seconds-before-status-checks 10 \
    --configfile "$WORK/config.yaml" "$WORK/tiny.yaml") > "$WORK/snakemake.log" 2>&1
SNAKEMAKE_RC=$?
set -e
WALL=$(( $(date +%s) - T0 ))
tail -25 "$WORK/snakemake.log"

# Job ids from Snakemake's own log; final states from squeue (MinJobAge keeps them; no sacct).
IDS=$(sed -n 's/.*has been submitted with SLURM jobid \([0-9]*\).*/\1/p' "$WORK/snakemake.log" | paste -sd, -)
N_SUBMITTED=$(grep -c "has been submitted with SLURM jobid" "$WORK/snakemake.log" || true)
N_FINISHED=$(grep -c "^Finished jobid" "$WORK/snakemake.log" || true)
echo "slurm_local: SLURM jobs of this run:"
[ -z "$IDS" ] || squeue -h -t all -j "$IDS" -o "%.6i %.10T %.9M %.4C %.8m %.10P %k"
STATES=$( [ -z "$IDS" ] || squeue -h -t all -j "$IDS" -o "%i %T")
N_COMPLETED=$(awk '$2 == "COMPLETED"' <<< "$STATES" | grep -c . || true)
for id in $(awk '$2 != "COMPLETED" {print $1}' <<< "$STATES"); do
    # SLURM's log of a failed job is the one place its error is (the temp folder goes at exit).
    log=$(sed -n "s/.*SLURM jobid $id (log: \(.*\))\.\$/\1/p" "$WORK/snakemake.log")
    echo "slurm_local: SLURM log of failed job $id ($log):"
    tail -20 "$log" 2>/dev/null || true
done
echo "slurm_local: snakemake rc=$SNAKEMAKE_RC, wall ${WALL} s; submitted $N_SUBMITTED, finished $N_FINISHED, COMPLETED in squeue $N_COMPLETED"
[ "$SNAKEMAKE_RC" -eq 0 ] || die "snakemake failed (log: $WORK/snakemake.log; NAMD_SLURM_KEEP=1 keeps it)"
# Every job Snakemake ran must have been a SLURM job that SLURM saw complete.
[ "$N_SUBMITTED" -gt 0 ] && [ "$N_SUBMITTED" -eq "$N_FINISHED" ] && [ "$N_COMPLETED" -eq "$N_SUBMITTED" ] \
    || die "not every job went through sbatch and completed"
echo "slurm_local: OK"
