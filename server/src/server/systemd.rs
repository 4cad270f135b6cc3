//! systemd's readiness protocol (`sd_notify`), for `Type=notify` units:
//! `READY=1` once both listeners are bound and the registry is recovered,
//! `STOPPING=1` when shutdown begins, and `WATCHDOG=1` every half
//! `WATCHDOG_USEC` while the writer takes changes, so systemd restarts a
//! server that hangs or lost its writer.
//!
//! The protocol is one datagram of `KEY=value` lines to the unix socket
//! named by `NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace).
//! Without the variable, nothing is sent. A datagram that cannot be sent is
//! logged and otherwise ignored: systemd's own timeouts then say what is
//! wrong.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where to tell systemd, if it is listening.
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET` (absent: a notifier that sends nothing).
    pub fn from_env() -> Notifier {
        let Some(name) = std::env::var_os("NOTIFY_SOCKET") else {
            return Notifier { target: None };
        };
        let name = name.to_string_lossy().into_owned();
        let address = match name.strip_prefix('@') {
            Some(abstract_name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(abstract_name.as_bytes())
            }
            None => SocketAddr::from_pathname(&name),
        };
        let target = address.and_then(|address| Ok((UnixDatagram::unbound()?, address)));
        match target {
            Ok(target) => Notifier { target: Some(target) },
            Err(error) => {
                tracing::warn!(%error, socket = %name, "NOTIFY_SOCKET is set but unusable; systemd will not hear from this server");
                Notifier { target: None }
            }
        }
    }

    /// Sends `state` (`KEY=value` lines).
    pub fn notify(&self, state: &str) {
        let Some((socket, address)) = &self.target else { return };
        if let Err(error) = socket.send_to_addr(state.as_bytes(), address) {
            tracing::warn!(%error, state, "cannot notify systemd");
        }
    }

    /// How often to pet the watchdog: half of `WATCHDOG_USEC`, when systemd
    /// asks for pets from this process (`WATCHDOG_PID` absent or ours).
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.target.as_ref()?;
        let pid_ok = std::env::var("WATCHDOG_PID")
            .map_or(true, |pid| pid.trim().parse::<u32>().is_ok_and(|pid| pid == std::process::id()));
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
        (pid_ok && usec > 0).then(|| Duration::from_micros(usec / 2))
    }
}
