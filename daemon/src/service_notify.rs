//! Readiness notifications for systemd's `Type=notify`: a datagram to the socket named by
//! `NOTIFY_SOCKET`. Without that variable, as outside systemd, nothing is sent.

/// Reports that the listeners are bound and the daemon serves.
pub fn ready() {
    #[cfg(unix)]
    send(&[sd_notify::NotifyState::Ready]);
}

/// Reports that the daemon has begun its graceful stop.
pub fn stopping() {
    #[cfg(unix)]
    send(&[sd_notify::NotifyState::Stopping]);
}

#[cfg(unix)]
fn send(states: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(err) = sd_notify::notify(false, states) {
        tracing::warn!(error = %err, "cannot notify the service manager through NOTIFY_SOCKET");
    }
}
