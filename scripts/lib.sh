#!/usr/bin/env bash
# Description: The set-up the walkthrough scripts share, as functions: find
#              (or build) a lesson's binary, pick the pace, install a missing
#              tool, start the lesson in the background with an exit trap
#              that stops only that process, and wait for it. What a script
#              watches stays in the script: that is its point.
# Usage: source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#   from a script in scripts/, after its own `set -euo pipefail`. Sourcing
#   only sets lesson_root and an empty lesson_pid and defines the functions
#   below. Run by itself, it says so and exits 0.
# shellcheck shell=bash

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    echo "lib.sh: the scripts' shared set-up; source it from a script (see scripts/zombie.sh)"
    exit 0
fi

# The repository's top directory (the parent of scripts/), found now, while
# the path this file was sourced by still means what it meant: the script
# may change directory later.
lesson_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The PID the exit trap stops, if it still runs: set by start_lesson, emptied
# by wait_lesson. (debugging.sh sets it to the parent gdb leaves running.)
lesson_pid=
# What the exit trap removes: temporary files and directories.
lesson_temps=()

# enter_repo: make the repository's top directory the current one, so that
# a script runs the same from anywhere inside it.
enter_repo() {
    cd "$lesson_root"
}

# lesson_pace DEFAULT [PACE]: the pace to run the lesson at: PACE if given
# and not empty, else $LESSON_PACE, else DEFAULT.
lesson_pace() {
    echo "${2:-${LESSON_PACE:-$1}}"
}

# pace_at_least MIN PACE: PACE, raised to MIN if it is below, so that a
# script has time to look.
pace_at_least() {
    awk -v min="$1" -v p="$2" 'BEGIN { print (p < min ? min : p) }'
}

# lesson_bin_dir PROFILE CARGO_ARGS...: the directory of the lesson
# binaries. $LESSON_BIN_DIR when it is set: the tests build once and set it,
# and a cargo build here would wait on the lock their own cargo holds.
# Otherwise `cargo build -q CARGO_ARGS` (with --release for PROFILE release)
# in the repository, and PROFILE's directory under $CARGO_TARGET_DIR or
# target/.
lesson_bin_dir() {
    local profile=$1 target
    shift
    if [[ -n ${LESSON_BIN_DIR:-} ]]; then
        echo "$LESSON_BIN_DIR"
        return 0
    fi
    if [[ $profile == release ]]; then
        set -- --release "$@"
    fi
    # Cargo's own output goes to stderr: stdout carries the answer.
    (cd "$lesson_root" && cargo build -q "$@" >&2) || return 1
    target=${CARGO_TARGET_DIR:-target}
    [[ $target == /* ]] || target=$lesson_root/$target
    echo "$target/$profile"
}

# lesson_bin NAME: the path of lesson NAME's debug binary, built first
# unless $LESSON_BIN_DIR is set. Fails if there is no such binary.
lesson_bin() {
    local dir
    dir=$(lesson_bin_dir debug -p "$1") || return 1
    if [[ ! -x $dir/$1 ]]; then
        echo "${0##*/}: no lesson binary $dir/$1" >&2
        return 1
    fi
    echo "$dir/$1"
}

# need_tool TOOL [PACKAGE]: make sure the command TOOL exists, installing
# PACKAGE (default: TOOL) with apt-get when it is missing and we are root.
# Fails, naming the package, when it cannot.
need_tool() {
    local tool=$1 package=${2:-$1}
    command -v "$tool" >/dev/null && return 0
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "$tool is missing: installing $package" >&2
        if [[ -z ${lesson_apt_updated:-} ]]; then
            apt-get update -qq >&2 || return 1
            lesson_apt_updated=yes
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >&2 || return 1
    fi
    if ! command -v "$tool" >/dev/null; then
        echo "${0##*/}: needs $tool: apt-get install $package" >&2
        return 1
    fi
}

# The exit trap: stop the lesson we started, if it still runs, and nothing
# else (its own children end with it: they asked for PR_SET_PDEATHSIG, or
# see their pipes close); then remove the temporary files.
lesson_cleanup() {
    if [[ -n $lesson_pid ]] && kill -0 "$lesson_pid" 2>/dev/null; then
        # It may be stopped (a script freezes it to look): wake it, so that
        # it can die. SIGTERM lets it stop its workers gracefully.
        kill -CONT "$lesson_pid" 2>/dev/null || true
        kill "$lesson_pid" 2>/dev/null || true
        # A process we did not fork ourselves cannot be waited for; that
        # wait fails at once.
        wait "$lesson_pid" 2>/dev/null || true
    fi
    if ((${#lesson_temps[@]} > 0)); then
        rm -rf "${lesson_temps[@]}"
    fi
}

# clean_up_at_exit: set the traps: lesson_cleanup at exit, and Ctrl-C or
# kill leave through it. (A lesson started in the background by a script
# ignores SIGINT, so the trap must stop it.)
clean_up_at_exit() {
    trap lesson_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# remove_at_exit PATH...: remove these files or directories when the script
# exits, however it exits.
remove_at_exit() {
    lesson_temps+=("$@")
    clean_up_at_exit
}

# start_lesson COMMAND ARGS...: run the lesson in the background (redirect
# the call to capture its output), keep its PID in lesson_pid, and set the
# traps that stop it if the script ends first.
start_lesson() {
    clean_up_at_exit
    "$@" &
    lesson_pid=$!
}

# wait_lesson: wait for the lesson started by start_lesson and return its
# exit status; lesson_pid is empty afterwards (nothing left to stop).
wait_lesson() {
    local status=0
    wait "$lesson_pid" || status=$?
    lesson_pid=
    return "$status"
}
