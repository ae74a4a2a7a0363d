# shellcheck shell=bash
# The start every command script under scripts/ can share. Source it right after
# `set -euo pipefail`:
#
#   # shellcheck source=lib/script.sh
#   source "$(dirname "${BASH_SOURCE[0]}")/lib/script.sh"
#
# It sets ROOT (the repository root) and defines:
#
#   log MSG...     print "[<script name without .sh>] MSG" on stderr
#   usage          print the script's header comment (line 2 up to its first `# shellcheck`
#                  line) without the leading "# "
#   raise_nofile   raise the open-file limit to the hard limit (keeps it when it cannot)

# The script that sourced this file (the bottom of the source stack).
_CRIER_SCRIPT=${BASH_SOURCE[${#BASH_SOURCE[@]} - 1]}
# shellcheck disable=SC2034 # for the scripts that source this
ROOT=$(cd "$(dirname "$_CRIER_SCRIPT")/.." && pwd)

log() { printf '[%s] %s\n' "$(basename "$_CRIER_SCRIPT" .sh)" "$*" >&2; }
usage() { sed -n '2,/^# shellcheck/{/^# shellcheck/d;s/^# \{0,1\}//;p}' "$_CRIER_SCRIPT"; }
raise_nofile() { ulimit -n "$(ulimit -Hn)" 2>/dev/null || true; }
