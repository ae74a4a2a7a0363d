# shellcheck shell=bash
# Free TCP ports on 127.0.0.1. Source it; it defines functions only.
#
#   free_ports N   print N distinct ports, space-separated, that nothing listens on right now
#   free_port      print one
#
# With python3 the kernel picks them (bind port 0, all N sockets open at once, so they are
# distinct); without it, random ports in 20000-60999 are probed with bash's /dev/tcp. Either way
# another process could take a port before the caller binds it; that is rare and shows up as a
# clear bind error.

free_ports() {
    local n=${1:-1}
    if command -v python3 >/dev/null 2>&1; then
        python3 - "$n" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
        return
    fi
    local -a ports=()
    local port tries=0
    while [[ ${#ports[@]} -lt $n ]]; do
        tries=$((tries + 1))
        if [[ $tries -gt 1000 ]]; then
            printf 'free_ports: no free port found\n' >&2
            return 1
        fi
        port=$((20000 + RANDOM % 41000))
        [[ " ${ports[*]} " == *" $port "* ]] && continue
        # A refused connection means nothing listens there.
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            ports+=("$port")
        fi
    done
    printf '%s\n' "${ports[*]}"
}

free_port() {
    free_ports 1
}
