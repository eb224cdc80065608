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
    /// The config file's name in the directory.
    name: Vec<u8>,
    /// It was modified and not yet closed: a writer is at work (an in-place write truncates
    /// first, so reading now could see half a file, or none).
    writing: bool,
}

impl DirWatch {
    /// Watches `dir` for files written, created, deleted or renamed in or out; `name` is the
    /// config file's name there (see [`Self::changed`]).
    pub fn new(dir: &Path, name: &std::ffi::OsStr) -> io::Result<Self> {
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
            | libc::IN_MODIFY
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
        Ok(Self {
            fd,
            name: name.as_bytes().to_vec(),
            writing: false,
        })
    }

    /// Waits for events and consumes them all; `Ok(true)` once nothing is writing the config
    /// file in place (its last modification was followed by a close), `Ok(false)` while a
    /// writer has it open. Which other file the events name does not matter: the caller
    /// compares the config file's contents, which also covers a symlink swap.
    pub async fn changed(&mut self) -> io::Result<bool> {
        let mut guard = self.fd.readable_mut().await?;
        let r = drain(guard.get_inner().as_raw_fd(), &self.name, &mut self.writing);
        if r.is_ok() {
            guard.clear_ready();
        }
        r.map(|()| !self.writing)
    }

    /// Consumes the events already queued, without waiting; `true` when a writer holds the
    /// config file now (a reload should wait for its close).
    pub fn writing_now(&mut self) -> io::Result<bool> {
        drain(self.fd.get_ref().as_raw_fd(), &self.name, &mut self.writing)?;
        Ok(self.writing)
    }
}

/// Reads every queued event of the non-blocking inotify descriptor `fd`, tracking in `writing`
/// whether `name` was modified and not closed since.
fn drain(fd: i32, name: &[u8], writing: &mut bool) -> io::Result<()> {
    // `struct inotify_event` (include/uapi/linux/inotify.h): wd, mask, cookie, len, name.
    const HEADER: usize = 16;
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: reads into a local buffer of the given length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Ok(());
            }
            return Err(e);
        }
        let mut at = 0;
        let n = n as usize;
        while at + HEADER <= n {
            let word = |i: usize| {
                u32::from_ne_bytes(buf[at + i..at + i + 4].try_into().unwrap_or_default())
            };
            let (mask, len) = (word(4), word(12) as usize);
            let this = buf
                .get(at + HEADER..(at + HEADER + len).min(n))
                .unwrap_or_default();
            let this = &this[..this.iter().position(|b| *b == 0).unwrap_or(this.len())];
            if this == name {
                if mask & libc::IN_MODIFY != 0 {
                    *writing = true;
                }
                if mask
                    & (libc::IN_CLOSE_WRITE
                        | libc::IN_MOVED_TO
                        | libc::IN_DELETE
                        | libc::IN_MOVED_FROM
                        | libc::IN_CREATE)
                    != 0
                {
                    *writing = false;
                }
            }
            at += HEADER + len;
        }
    }
}
