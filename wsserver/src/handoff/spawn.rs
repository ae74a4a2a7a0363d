//! Starting the new process of a live hand-off: the program file on disk (after a package
//! upgrade, `/proc/self/exe` still names the old, deleted file; the path this process was
//! started as names the new one), with this process's arguments and environment, plus
//! [`HANDOFF_FD_ENV`] naming its end of the hand-off socket.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use super::fd_pass;

/// Names the descriptor of the hand-off socket in the new process.
pub const HANDOFF_FD_ENV: &str = "CRIER_HANDOFF_FD";

/// The program to start: `argv[0]` resolved (relative to the working directory, or along
/// `PATH` when it has no slash), else the running executable's path.
pub fn successor_exe() -> std::io::Result<PathBuf> {
    let arg0 = std::env::args_os().next().map(PathBuf::from);
    let found = arg0.and_then(|arg0| resolve(&arg0, std::env::var_os("PATH"), std::env::current_dir().ok()));
    match found {
        Some(path) => Ok(path),
        None => {
            let exe = std::env::current_exe()?;
            // Linux marks a replaced executable " (deleted)": the new file has the plain name.
            let text = exe.to_string_lossy();
            Ok(text.strip_suffix(" (deleted)").map_or(exe.clone(), PathBuf::from))
        }
    }
}

fn resolve(arg0: &Path, path_var: Option<OsString>, cwd: Option<PathBuf>) -> Option<PathBuf> {
    if arg0.as_os_str().is_empty() {
        return None;
    }
    let candidate = if arg0.components().count() > 1 || arg0.is_absolute() {
        if arg0.is_absolute() {
            arg0.to_owned()
        } else {
            cwd?.join(arg0)
        }
    } else {
        std::env::split_paths(&path_var?).map(|dir| dir.join(arg0)).find(|p| p.is_file())?
    };
    candidate.is_file().then_some(candidate)
}

/// Starts the new process with `theirs` (its end of the hand-off socket) inherited.
pub fn spawn(theirs: &UnixStream) -> std::io::Result<Child> {
    let exe = successor_exe()?;
    fd_pass::inheritable(theirs.as_fd())?;
    tracing::info!(exe = %exe.display(), "starting the new process of a live hand-off");
    Command::new(&exe).args(std::env::args_os().skip(1)).env(HANDOFF_FD_ENV, theirs.as_raw_fd().to_string()).spawn()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv0_is_found_as_given_relative_or_along_path() {
        let dir = std::env::temp_dir().join(format!("crier-spawn-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::write(dir.join("bin/prog"), b"").unwrap();
        let path = Some(OsString::from(format!("/nonexistent:{}", dir.join("bin").display())));
        assert_eq!(resolve(Path::new("prog"), path.clone(), None), Some(dir.join("bin/prog")));
        assert_eq!(resolve(Path::new("bin/prog"), None, Some(dir.clone())), Some(dir.join("bin/prog")));
        assert_eq!(resolve(&dir.join("bin/prog"), None, None), Some(dir.join("bin/prog")));
        assert_eq!(resolve(Path::new("missing"), path, None), None);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
