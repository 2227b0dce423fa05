//! Running `ccod` as a service: the files `ccoctl service` writes, and the readiness
//! notification for systemd's `Type=notify`.

#![cfg(unix)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use cco_tests::daemon::{binary, DaemonDirs, DaemonOptions, DaemonProcess};

fn service(dir: &Path, args: &[&str]) -> Output {
    Command::new(binary("ccoctl"))
        .arg("service")
        .args(args)
        .env("CCO_SERVICE_DIR", dir)
        .env_remove("CCO_SOCKET")
        .output()
        .expect("ccoctl runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[cfg(not(target_os = "macos"))]
#[test]
fn user_unit_install_status_uninstall() {
    let dir = tempfile::tempdir().unwrap();
    let ccod = std::fs::canonicalize(binary("ccod")).unwrap();
    let unit = dir.path().join("ccod.service");

    let output = service(dir.path(), &["status"]);
    let text = stdout(&output);
    assert!(output.status.success(), "{output:?}");
    assert!(text.starts_with("installed: no\n"), "{text}");

    // Without --ccod, the ccod beside ccoctl is used.
    let output = service(dir.path(), &["install"]);
    let text = stdout(&output);
    assert!(output.status.success(), "{output:?}");
    assert!(
        text.contains(&format!("wrote {}", unit.display())),
        "{text}"
    );
    assert!(
        text.contains("systemctl --user daemon-reload && systemctl --user enable --now ccod"),
        "{text}"
    );

    let content = std::fs::read_to_string(&unit).unwrap();
    assert!(
        content.contains(&format!("\nExecStart={}\n", ccod.display())),
        "{content}"
    );
    let install_dir = ccod.parent().unwrap().display().to_string();
    let writable = content
        .lines()
        .find(|line| line.starts_with("ReadWritePaths="))
        .unwrap();
    assert!(writable.ends_with(&format!(" {install_dir}")), "{writable}");
    for line in [
        "Type=notify",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "UMask=0077",
        "WantedBy=default.target",
    ] {
        assert!(
            content.lines().any(|l| l == line),
            "missing {line}: {content}"
        );
    }

    let output = service(dir.path(), &["status"]);
    let text = stdout(&output);
    assert!(text.starts_with("installed: yes\n"), "{text}");
    assert!(
        text.contains(&format!("runs:      {}\n", ccod.display())),
        "{text}"
    );

    let output = service(dir.path(), &["uninstall"]);
    let text = stdout(&output);
    assert!(output.status.success(), "{output:?}");
    assert!(
        text.starts_with(&format!("removed {}", unit.display())),
        "{text}"
    );
    assert!(
        text.contains("systemctl --user disable --now ccod"),
        "{text}"
    );
    assert!(!unit.exists());

    let output = service(dir.path(), &["uninstall"]);
    assert!(
        stdout(&output).starts_with("no service file at"),
        "{output:?}"
    );
}

#[cfg(not(target_os = "macos"))]
#[test]
fn system_unit_keeps_its_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let ccod = std::fs::canonicalize(binary("ccod")).unwrap();
    let ccod_arg = ccod.display().to_string();
    let output = service(dir.path(), &["install", "--system", "--ccod", &ccod_arg]);
    let text = stdout(&output);
    assert!(output.status.success(), "{output:?}");
    assert!(
        text.contains("systemctl daemon-reload && systemctl enable --now ccod"),
        "{text}"
    );
    let content = std::fs::read_to_string(dir.path().join("ccod.service")).unwrap();
    let expected =
        format!("\nExecStart={ccod_arg} --data-dir /var/lib/cco --socket /run/cco/ccod.sock\n");
    assert!(content.contains(&expected), "{content}");
    for line in [
        "User=cco",
        "Type=notify",
        "ProtectHome=yes",
        "MemoryDenyWriteExecute=yes",
    ] {
        assert!(
            content.lines().any(|l| l == line),
            "missing {line}: {content}"
        );
    }
}

#[test]
fn install_rejects_missing_binary() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-ccod");
    let output = service(
        dir.path(),
        &["install", "--ccod", missing.to_str().unwrap()],
    );
    let message = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(message.contains("cannot find ccod at"), "{message}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn ready_is_sent_to_notify_socket() {
    let dirs = DaemonDirs::new();
    let path = dirs.root.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let options =
        DaemonOptions::new("http://127.0.0.1:9").env("NOTIFY_SOCKET", path.to_str().unwrap());
    let daemon = DaemonProcess::start(&dirs, &options);
    let mut buffer = [0u8; 256];
    let read = socket.recv(&mut buffer).expect("a notification arrives");
    assert_eq!(&buffer[..read], b"READY=1\n");
    assert_eq!(daemon.shutdown(), Some(0));
    let read = socket
        .recv(&mut buffer)
        .expect("a stop notification arrives");
    assert_eq!(&buffer[..read], b"STOPPING=1\n");
}
