//! Noticing that a config file changed: inotify on its directory, so that an atomic
//! rename-over (editors, configuration management) and a Kubernetes ConfigMap's `..data`
//! symlink swap are seen as well as an in-place write.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

use tokio::io::unix::AsyncFd;

/// An inotify watch on one directory.
pub struct DirWatch {
    fd: AsyncFd<OwnedFd>,
}

impl DirWatch {
    /// Watches `dir` for files written, created, deleted or renamed in or out.
    pub fn new(dir: &Path) -> io::Result<Self> {
        // SAFETY: plain syscall with valid flags; the fd is owned right below.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let path = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
        let mask = libc::IN_CLOSE_WRITE
            | libc::IN_MOVED_TO
            | libc::IN_MOVED_FROM
            | libc::IN_CREATE
            | libc::IN_DELETE;
        // SAFETY: valid inotify fd and NUL-terminated path that outlives the call.
        if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open and the same for
        // as long as it is registered.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }?;
        Ok(Self { fd })
    }

    /// Waits for events and consumes them all. Which file they name does not matter: the
    /// caller compares the config file's contents, which also covers a symlink swap.
    pub async fn changed(&mut self) -> io::Result<()> {
        let mut guard = self.fd.readable_mut().await?;
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reads into a local buffer of the given length.
            let n = unsafe {
                libc::read(
                    guard.get_inner().as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    guard.clear_ready();
                    return Ok(());
                }
                return Err(e);
            }
        }
    }
}
