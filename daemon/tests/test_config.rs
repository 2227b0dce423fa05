//! `ccod --test-config` validates and prints the effective configuration.

use std::process::Command;

fn ccod(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ccod"))
        .args(args)
        .env("CCO_CONFIG", dir.join("config.toml"))
        .env("CCO_DATA_DIR", dir.join("data"))
        .env("CCO_SOCKET", dir.join("ccod.sock"))
        .env("ANTHROPIC_API_KEY", "sk-ant-test-config-secret")
        .output()
        .expect("ccod runs")
}

#[test]
fn test_config_prints_redacted_settings() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        "port = 9123\ncache_ttl = 60\n",
    )
    .unwrap();
    let output = ccod(&["--test-config", "--cache-ttl", "120"], dir.path());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("port = 9123"), "{stdout}");
    assert!(stdout.contains("cache_ttl = 120"), "{stdout}");
    assert!(
        stdout.contains("anthropic_api_key = \"<redacted"),
        "{stdout}"
    );
    assert!(!stdout.contains("sk-ant-test-config-secret"), "{stdout}");
    assert!(
        !dir.path().join("data").exists(),
        "--test-config must not create files"
    );
}

#[test]
fn test_config_rejects_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), "cache_size = \"big\"\n").unwrap();
    let output = ccod(&["--test-config"], dir.path());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr.contains("invalid config file"), "{stderr}");
    assert!(stderr.contains("cache_size"), "{stderr}");
}

#[test]
fn env_overrides_file_and_flag_overrides_env() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), "port = 9001\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ccod"))
        .args(["--test-config"])
        .env("CCO_CONFIG", dir.path().join("config.toml"))
        .env("CCO_DATA_DIR", dir.path().join("data"))
        .env("CCO_SOCKET", dir.path().join("ccod.sock"))
        .env("CCO_PORT", "9002")
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("port = 9002"), "{stdout}");

    let output = Command::new(env!("CARGO_BIN_EXE_ccod"))
        .args(["--test-config", "--port", "9003"])
        .env("CCO_CONFIG", dir.path().join("config.toml"))
        .env("CCO_DATA_DIR", dir.path().join("data"))
        .env("CCO_SOCKET", dir.path().join("ccod.sock"))
        .env("CCO_PORT", "9002")
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("port = 9003"), "{stdout}");
}

#[test]
fn test_config_checks_files_and_level() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), "").unwrap();
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    let output = ccod(
        &["--test-config", "--tls-cert", missing, "--tls-key", missing],
        dir.path(),
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot read the TLS certificate"),
        "{stderr}"
    );

    let output = ccod(&["--test-config", "--host", "not a host"], dir.path());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot resolve the listen address"),
        "{stderr}"
    );

    let output = ccod(&["--test-config", "--log-level", "debgu"], dir.path());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a level"), "{stderr}");
}
