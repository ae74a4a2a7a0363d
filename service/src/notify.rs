//! systemd readiness notification (`sd_notify`), a no-op when `NOTIFY_SOCKET` is unset.

/// Tells systemd the service is ready (`READY=1`). Errors are logged, never fatal.
pub fn notify_ready() {
    send("READY=1\nSTATUS=ready");
}

/// Tells systemd that `pid` is the service's main process from now on (sent by the old main
/// process of a live hand-off just before it exits, naming the new one).
pub fn notify_main_pid(pid: u32) {
    send(&format!("MAINPID={pid}"));
}

/// Tells systemd the new process of a live hand-off is ready (accepted from a process that is
/// not the main one only with `NotifyAccess=all`).
pub fn notify_took_over() {
    send("READY=1\nSTATUS=ready (took over the sockets of the previous process)");
}

/// Tells systemd the service is stopping.
pub fn notify_stopping() {
    send("STOPPING=1");
}

#[cfg(unix)]
fn send(state: &str) {
    use std::os::unix::net::UnixDatagram;
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let result = UnixDatagram::unbound().and_then(|socket| {
        let bytes = path.as_encoded_bytes();
        if let Some(abstract_name) = bytes.strip_prefix(b"@") {
            #[cfg(target_os = "linux")]
            {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)?;
                return socket.send_to_addr(state.as_bytes(), &addr).map(|_| ());
            }
            #[cfg(not(target_os = "linux"))]
            {
                let _ = abstract_name;
                return Err(std::io::Error::other("abstract sockets need Linux"));
            }
        }
        socket.send_to(state.as_bytes(), &path).map(|_| ())
    });
    if let Err(e) = result {
        tracing::warn!("sd_notify to {:?} failed: {e}", path);
    }
}

#[cfg(not(unix))]
fn send(_state: &str) {}
