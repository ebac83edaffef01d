#!/usr/bin/env bash
# Description: Watch the signals lesson's signal masks from outside. While
#              its example signals_signalfd waits, /proc/<pid>/status shows SIGUSR1 and
#              SIGCHLD blocked (SigBlk), SIGPIPE ignored (SigIgn) and
#              SIGCHLD caught (SigCgt), as hex masks where bit n-1 stands
#              for signal n. The script decodes them, then sends the lesson a
#              SIGUSR1, which the example reads from its signalfd and
#              attributes to this shell's PID.
# Usage: scripts/signals.sh [PACE]
#   PACE (> 0) scales the lesson's pauses (default: $LESSON_PACE or 0.3).
#   Run from anywhere inside the repository.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pace=$(lesson_pace 0.3 "${1:-}")
if [[ $pace =~ ^[0.]*$ ]]; then
    echo "signals.sh: PACE must be above 0 (the lesson's wait is scaled by it)" >&2
    exit 2
fi
enter_repo
# An example's binary: built with --example, found in examples/.
dir=$(lesson_bin_dir debug -p signals --example signals_signalfd)
bin=$dir/examples/signals_signalfd
if [[ ! -x $bin ]]; then
    echo "signals.sh: no example binary $bin" >&2
    exit 1
fi
out=$(mktemp)
remove_at_exit "$out"

# Signal numbers, and their bits in the masks.
usr1=$(kill -l USR1)
chld=$(kill -l CHLD)
pipe=$(kill -l PIPE)
has() { (( ($1 >> ($2 - 1)) & 1 )); }

# A mask in words: "SIGUSR1 SIGCHLD". 32 and 33 have no name: the C
# library keeps them for itself.
decode() {
    local mask=$1 n name words=()
    for ((n = 1; n <= 64; n++)); do
        if has "$mask" "$n"; then
            name=$(kill -l "$n" 2>/dev/null || true)
            if [[ -n $name ]]; then
                words+=("SIG$name")
            else
                words+=("signal $n")
            fi
        fi
    done
    echo "${words[*]:-none}"
}

# The window is long (100 s at pace 1), but our SIGUSR1 ends it early.
start_lesson "$bin" --pace "$pace" --window 100 >"$out" 2>&1
pid=$lesson_pid
echo "started the signals lesson's example signals_signalfd as PID $pid (pace $pace)"

blk=0 ign=0 cgt=0 seen=
for _ in $(seq 1 1500); do
    [[ -r /proc/$pid/status ]] || break
    while read -r key value; do
        case $key in
            SigBlk:) blk=$((16#$value)) ;;
            SigIgn:) ign=$((16#$value)) ;;
            SigCgt:) cgt=$((16#$value)) ;;
        esac
    done <"/proc/$pid/status" || break
    if has "$blk" "$usr1"; then
        seen=yes
        break
    fi
    sleep 0.02
done

if [[ -z $seen ]]; then
    echo "signals.sh: never saw SIGUSR1 in the lesson's SigBlk" >&2
    cat "$out" >&2
    exit 1
fi
echo "while the lesson waits for SIGUSR1 (grep Sig /proc/$pid/status):"
grep '^Sig' "/proc/$pid/status"
printf '  blocked (SigBlk): %s\n' "$(decode "$blk")"
printf '  ignored (SigIgn): %s\n' "$(decode "$ign")"
printf '  caught  (SigCgt): %s\n' "$(decode "$cgt")"
if has "$ign" "$(kill -l INT)"; then
    echo "  (SIGINT ignored: bash starts a background job of a script that way," \
        "and an ignored signal stays ignored across exec)"
fi
failed=
has "$blk" "$chld" || { echo "signals.sh: SIGCHLD is not blocked" >&2; failed=yes; }
has "$cgt" "$chld" || { echo "signals.sh: SIGCHLD is not caught" >&2; failed=yes; }
has "$ign" "$pipe" || { echo "signals.sh: SIGPIPE is not ignored" >&2; failed=yes; }

# Our own PID, as the lesson will read it from the signalfd (kill is a
# shell builtin: this very process sends the signal).
me=$BASHPID
echo "sending SIGUSR1 from this shell, PID $me"
kill -USR1 "$pid"

status=0
wait_lesson || status=$?
echo "the lesson's output:"
cat "$out"
if ((status != 0)); then
    echo "signals.sh: the lesson failed (status $status)" >&2
    exit 1
fi
if ! grep -q "SIGUSR1 from PID $me (uid" "$out"; then
    echo "signals.sh: the lesson did not name PID $me as the sender" >&2
    exit 1
fi
if [[ -n $failed ]]; then
    exit 1
fi
echo "signals.sh: saw SIGUSR1 blocked, SIGCHLD blocked and caught, SIGPIPE ignored; the lesson named us as the sender"
