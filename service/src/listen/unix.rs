//! Unix-domain sockets this process creates: mode and owner of the socket file, a stale file
//! (its process died) replaced, and the file removed again when the listener goes.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Mode and owner given to a unix socket file this process creates. Connecting needs write
/// permission on the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UnixOptions {
    pub mode: SocketMode,
    pub owner: Option<Owner>,
}

/// Permission bits of a socket file (octal, like `0660`: owner and group may connect).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketMode(pub u32);

impl Default for SocketMode {
    /// `0660`: the owner and the group (nginx's, with `--listen-owner`) may connect.
    fn default() -> SocketMode {
        SocketMode(0o660)
    }
}

impl FromStr for SocketMode {
    type Err = String;

    fn from_str(text: &str) -> Result<SocketMode, String> {
        match u32::from_str_radix(text.trim(), 8) {
            Ok(mode) if mode <= 0o777 => Ok(SocketMode(mode)),
            _ => Err(format!("{text:?} is not an octal mode from 0 to 0777 (like 0660)")),
        }
    }
}

impl fmt::Display for SocketMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

/// Owner and group of a socket file: `USER`, `USER:GROUP` or `:GROUP`, by name (looked up in
/// /etc/passwd and /etc/group) or number. Changing the group needs membership in it; changing
/// the user needs CAP_CHOWN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl FromStr for Owner {
    type Err = String;

    fn from_str(text: &str) -> Result<Owner, String> {
        let (user, group) = text.split_once(':').unwrap_or((text, ""));
        let uid = (!user.is_empty()).then(|| lookup(user, "/etc/passwd", "user")).transpose()?;
        let gid = (!group.is_empty()).then(|| lookup(group, "/etc/group", "group")).transpose()?;
        if uid.is_none() && gid.is_none() {
            return Err(format!("{text:?} names no user or group (like crier:www-data or :www-data)"));
        }
        Ok(Owner { uid, gid })
    }
}

/// A numeric id, or the third field of `name`'s line in `file` (passwd and group lay out the
/// same way).
fn lookup(name: &str, file: &str, what: &str) -> Result<u32, String> {
    if let Ok(id) = name.parse() {
        return Ok(id);
    }
    let table = fs::read_to_string(file).map_err(|e| format!("cannot read {file} to find {what} {name:?}: {e}"))?;
    find_id(&table, name).ok_or_else(|| format!("no {what} named {name:?} in {file}"))
}

fn find_id(table: &str, name: &str) -> Option<u32> {
    table.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next() == Some(name)).then(|| fields.nth(1).and_then(|id| id.parse().ok())).flatten()
    })
}

/// The socket file this process created, removed on drop if it is still the same file and
/// nothing accepts on it: a successor that bound the path meanwhile keeps its own, even when the
/// file system gave its file the same inode number.
pub(super) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        match fs::symlink_metadata(&self.path) {
            Ok(meta)
                if meta.dev() == self.dev && meta.ino() == self.ino && UnixStream::connect(&self.path).is_err() =>
            {
                if let Err(e) = fs::remove_file(&self.path) {
                    tracing::warn!(path = %self.path.display(), "cannot remove the socket file: {e}");
                }
            }
            _ => {}
        }
    }
}

/// Binds `path` with `options`' mode and owner. A file already there is replaced only when it
/// is a socket nobody accepts on (connecting is refused): the leftover of a process that died.
pub(super) fn bind(path: &Path, options: &UnixOptions) -> Result<(UnixListener, SocketFile), String> {
    let listener = match UnixListener::bind(path) {
        Ok(listener) => listener,
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            remove_stale(path)?;
            UnixListener::bind(path).map_err(|e| e.to_string())?
        }
        Err(e) => return Err(e.to_string()),
    };
    let meta = fs::symlink_metadata(path).map_err(|e| format!("cannot stat the new socket: {e}"))?;
    // Created first: if setting the mode or owner fails, the file is removed again.
    let file = SocketFile { path: path.to_owned(), dev: meta.dev(), ino: meta.ino() };
    fs::set_permissions(path, fs::Permissions::from_mode(options.mode.0))
        .map_err(|e| format!("cannot set mode {}: {e}", options.mode))?;
    if let Some(owner) = options.owner {
        std::os::unix::fs::chown(path, owner.uid, owner.gid).map_err(|e| {
            format!("cannot change the owner to {owner:?}: {e} (the group needs membership, the user CAP_CHOWN)")
        })?;
    }
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok((listener, file))
}

fn remove_stale(path: &Path) -> Result<(), String> {
    let meta = fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    if !meta.file_type().is_socket() {
        return Err("the path exists and is not a socket; it is left alone".into());
    }
    match UnixStream::connect(path) {
        Ok(_) => Err("another process is listening on this socket".into()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "replacing a stale socket file (nothing accepts on it)");
            fs::remove_file(path).map_err(|e| format!("cannot remove the stale socket file: {e}"))
        }
        Err(e) => Err(format!("the path exists and connecting to it fails ({e}); it is left alone")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("crier-listen-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn modes_parse_as_octal() {
        assert_eq!("0660".parse::<SocketMode>().unwrap(), SocketMode(0o660));
        assert_eq!("666".parse::<SocketMode>().unwrap().to_string(), "0666");
        assert!("0999".parse::<SocketMode>().is_err());
        assert!("01777".parse::<SocketMode>().is_err());
    }

    #[test]
    fn owners_parse_by_name_and_number() {
        assert_eq!("0:0".parse::<Owner>().unwrap(), Owner { uid: Some(0), gid: Some(0) });
        assert_eq!(":root".parse::<Owner>().unwrap(), Owner { uid: None, gid: Some(0) });
        assert_eq!("root".parse::<Owner>().unwrap(), Owner { uid: Some(0), gid: None });
        assert!("no-such-user-here".parse::<Owner>().unwrap_err().contains("no user named"));
        assert!(":".parse::<Owner>().is_err());
        assert_eq!(find_id("a:x:1:1::/:/bin/sh\nwww-data:x:33:33::/:/bin/sh\n", "www-data"), Some(33));
        assert_eq!(find_id("www-data:x:33:\n", "www"), None);
    }

    #[test]
    fn binds_with_the_mode_and_removes_the_file_on_drop() {
        let dir = temp_dir("mode");
        let path = dir.join("s.sock");
        let options = UnixOptions { mode: SocketMode(0o600), owner: None };
        let (listener, file) = bind(&path, &options).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        UnixStream::connect(&path).expect("connects");
        drop(listener);
        drop(file);
        assert!(!path.exists(), "socket file removed");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_stale_socket_is_replaced_and_a_live_one_or_a_file_is_not() {
        let dir = temp_dir("stale");
        let path = dir.join("s.sock");
        // A stale file: bound, then the listener closed without removing it.
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let (live, file) = bind(&path, &UnixOptions::default()).expect("stale socket replaced");
        let err = bind(&path, &UnixOptions::default()).err().expect("a live socket is not replaced");
        assert!(err.contains("another process is listening"), "{err}");
        UnixStream::connect(&path).expect("the first listener still has the path");
        drop((live, file));

        let plain = dir.join("plain");
        fs::write(&plain, "data").unwrap();
        let err = bind(&plain, &UnixOptions::default()).err().expect("a regular file is not replaced");
        assert!(err.contains("not a socket"), "{err}");
        assert_eq!(fs::read_to_string(&plain).unwrap(), "data");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_replaced_file_is_left_to_its_new_owner() {
        let dir = temp_dir("replaced");
        let path = dir.join("s.sock");
        let (first, file) = bind(&path, &UnixOptions::default()).unwrap();
        drop(first);
        fs::remove_file(&path).unwrap();
        let (_second, _second_file) = bind(&path, &UnixOptions::default()).unwrap();
        drop(file);
        assert!(path.exists(), "the successor's socket stays");
        UnixStream::connect(&path).expect("the successor still listens");
        fs::remove_dir_all(dir).unwrap();
    }
}
