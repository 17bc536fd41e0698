//! The binary as scripts use it: JSON on stdout, exit codes per kind of failure. Only
//! commands that need no box run here (the system tests drive real boxes).

use abri_factory::FactoryData;
use abri_factory::code::verify_secret;
use serde_json::Value;
use std::process::{Command, Output};

fn provision(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_abri-provision"))
        .args(args)
        .env_remove("ABRI_CLAIM_CODE")
        .output()
        .expect("the test binary runs")
}

fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[test]
fn factory_prints_a_code_that_the_written_file_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("factory.toml");
    let label = dir.path().join("label.svg");
    let run = provision(&[
        "factory",
        "--out",
        out.to_str().unwrap(),
        "--label",
        label.to_str().unwrap(),
        "--mac",
        "52:54:00:12:ab:cd",
        "--json",
    ]);
    assert!(run.status.success(), "{run:?}");
    let json = json_of(&run);
    let code = json["claim_code"].as_str().unwrap();
    assert_eq!(json["box_name"], "backup-abcd");
    assert_eq!(json["factory"], out.to_str().unwrap());
    assert_eq!(json["label"], label.to_str().unwrap());
    let data = FactoryData::load(&out).unwrap();
    assert!(verify_secret(code, &data.claim_code_hash));
    assert!(std::fs::read_to_string(&label).unwrap().contains(code));

    let again = provision(&["factory", "--out", out.to_str().unwrap(), "--json"]);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    let json = json_of(&again);
    assert_eq!(json["error"], "failed");
    assert!(json["message"].as_str().unwrap().contains("already exists"));
    let data = FactoryData::load(&out).unwrap();
    assert!(verify_secret(code, &data.claim_code_hash), "left intact");
}

#[test]
fn human_factory_output_shows_the_code() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("factory.toml");
    let run = provision(&["factory", "--out", out.to_str().unwrap()]);
    assert!(run.status.success(), "{run:?}");
    let text = String::from_utf8(run.stdout).unwrap();
    let line = text.lines().find(|l| l.starts_with("Claim code:")).unwrap();
    let code = line.trim_start_matches("Claim code:").trim();
    let data = FactoryData::load(&out).unwrap();
    assert!(verify_secret(code, &data.claim_code_hash), "{text}");
}

#[test]
fn a_bad_box_argument_is_a_usage_error() {
    let run = provision(&[
        "activate",
        "http://backup-abcd.local",
        "--claim-code",
        "abcd-efgh-jkmn-pqrs",
        "--json",
    ]);
    assert_eq!(run.status.code(), Some(2), "{run:?}");
    let json = json_of(&run);
    assert_eq!(json["error"], "usage");
    assert!(json["message"].as_str().unwrap().contains("https://"));
    assert!(String::from_utf8_lossy(&run.stderr).contains("https://"));
}

#[test]
fn a_mistyped_claim_code_is_refused_before_any_network() {
    let run = provision(&["activate", "backup-abcd", "--claim-code", "0000", "--json"]);
    assert_eq!(run.status.code(), Some(6), "{run:?}");
    assert_eq!(json_of(&run)["error"], "bad_claim_code");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("label"), "{stderr}");
}

#[test]
fn an_unreachable_box_has_its_own_exit_code() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let target = format!("127.0.0.1:{port}");
    let fingerprint = "ab".repeat(32);
    let run = provision(&["status", &target, "--fingerprint", &fingerprint, "--json"]);
    assert_eq!(run.status.code(), Some(4), "{run:?}");
    assert_eq!(json_of(&run)["error"], "unreachable");

    let code = "abcd-efgh-jkmn-pqrs";
    let run = provision(&[
        "activate",
        &target,
        "--fingerprint",
        &fingerprint,
        "--claim-code",
        code,
    ]);
    assert_eq!(run.status.code(), Some(4), "{run:?}");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(!all.contains(code), "the claim code is never echoed: {all}");
}

#[test]
fn a_malformed_fingerprint_is_a_usage_error() {
    let run = provision(&["status", "127.0.0.1", "--fingerprint", "1234", "--json"]);
    assert_eq!(run.status.code(), Some(2), "{run:?}");
    assert!(json_of(&run)["message"].as_str().unwrap().contains("1234"));
}
