//! Runs the `crash-test` binary against the real server: a few cycles must
//! pass, and a server that forgets its token log must be caught.
//!
//! The server binary is found by the shared harness
//! (`latchkey_tests::server_binary`): at `LATCHKEY_SERVER_BIN`, or next to
//! this test's profile directory (`target/<profile>/latchkey-server`), built
//! with `cargo build -p latchkey-server` if missing.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use latchkey_tests::server_binary;

fn crash_test(server: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crash-test"))
        .arg("--server-bin")
        .arg(server)
        .args(args)
        .output()
        .expect("run crash-test")
}

fn describe(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn five_crash_cycles_lose_nothing_acknowledged() {
    let output = crash_test(&server_binary(), &["--cycles", "5"]);
    let text = describe(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("cycles survived        5 of 5"), "{text}");
    assert_eq!(text.matches("\ncycle ").count(), 5, "{text}");
}

/// A harness that cannot fail proves nothing: a "server" that deletes its
/// token log before every start loses every acknowledged token at the first
/// restart, and the run must stop there, say so, and keep the data.
#[test]
fn a_server_that_forgets_its_log_is_caught() {
    let home = tempfile::tempdir().unwrap();
    let wrapper = home.path().join("forgetful-server");
    let script = format!(
        "#!/bin/sh\nrm -f \"$LATCHKEY_SYSTEM_PATH/tokens.log\"\nexec '{}' \"$@\"\n",
        server_binary().display()
    );
    std::fs::write(&wrapper, script).unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let data_dir = home.path().join("data");
    let data_arg = data_dir.to_str().unwrap();
    // Killed no earlier than 200 ms into the load: creates were acknowledged.
    let args = ["--cycles", "3", "--kill-min-ms", "200", "--kill-max-ms", "250", "--data-dir", data_arg];
    let output = crash_test(&wrapper, &args);
    let text = describe(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("VIOLATION"), "{text}");
    assert!(text.contains("in cycle 1: token "), "{text}");
    assert!(text.contains("(create acknowledged in cycle 1), so listed; found not listed"), "{text}");
    assert!(text.contains(&format!("data directory kept for inspection: {data_arg}")), "{text}");
    assert!(data_dir.join("tokens.log").exists(), "{text}");
    // The kept run directory (config and server output) is this test's to remove.
    let server_log = text.split("server output of every start: ").nth(1).and_then(|rest| rest.lines().next());
    let run_dir = Path::new(server_log.expect("server output path")).parent().unwrap();
    assert!(run_dir.join("server.log").exists(), "{text}");
    std::fs::remove_dir_all(run_dir).unwrap();
}
