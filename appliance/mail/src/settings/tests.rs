use super::*;

fn valid() -> RelaySettings {
    RelaySettings {
        host: "smtp.partner.fr".into(),
        port: 587,
        security: Security::Starttls,
        user: Some("box@partner.fr".into()),
        password: Some("s3cret-Pa55".into()),
        sender: "backup-abcd@partner.fr".into(),
        recipients: vec!["alerts@partner.fr".into(), "it@customer.fr".into()],
    }
}

fn field_of(settings: &RelaySettings) -> String {
    let err = settings.validate().unwrap_err();
    err.split(':').next().unwrap().to_string()
}

#[test]
fn a_complete_setting_is_valid() {
    valid().validate().unwrap();
}

#[test]
fn hosts_may_be_names_or_addresses() {
    for host in [
        "smtp.partner.fr",
        "relay",
        "mail-1.example.com.",
        "192.168.1.5",
        "2001:db8::25",
    ] {
        let settings = RelaySettings {
            host: host.into(),
            ..valid()
        };
        settings
            .validate()
            .unwrap_or_else(|e| panic!("{host}: {e}"));
    }
}

#[test]
fn bad_hosts_name_the_host_field() {
    for host in [
        "",
        "smtp partner.fr",
        "-smtp.fr",
        "smtp..fr",
        "smtp.fr:25",
        "smtp_x.fr",
        "é.fr",
    ] {
        let settings = RelaySettings {
            host: host.into(),
            ..valid()
        };
        assert_eq!(field_of(&settings), "host", "{host:?}");
    }
    let long = RelaySettings {
        host: format!("{}.fr", "a".repeat(64)),
        ..valid()
    };
    assert_eq!(field_of(&long), "host");
}

#[test]
fn port_zero_is_refused() {
    let settings = RelaySettings { port: 0, ..valid() };
    assert_eq!(field_of(&settings), "port");
}

#[test]
fn sender_and_recipients_must_be_addresses() {
    let settings = RelaySettings {
        sender: "not an address".into(),
        ..valid()
    };
    let err = settings.validate().unwrap_err();
    assert!(err.starts_with("sender: 'not an address'"), "{err}");

    let settings = RelaySettings {
        recipients: vec!["ok@partner.fr".into(), "nope@".into()],
        ..valid()
    };
    let err = settings.validate().unwrap_err();
    assert!(err.starts_with("recipients: 'nope@'"), "{err}");

    let settings = RelaySettings {
        sender: "Backup <backup@partner.fr>".into(),
        ..valid()
    };
    assert_eq!(
        field_of(&settings),
        "sender",
        "display names are not addresses"
    );
}

#[test]
fn no_recipients_is_allowed_but_not_too_many() {
    RelaySettings {
        recipients: vec![],
        ..valid()
    }
    .validate()
    .unwrap();
    let many = |n: usize| RelaySettings {
        recipients: (0..n).map(|i| format!("r{i}@partner.fr")).collect(),
        ..valid()
    };
    many(MAX_RECIPIENTS).validate().unwrap();
    assert_eq!(field_of(&many(MAX_RECIPIENTS + 1)), "recipients");
}

#[test]
fn user_and_password_go_together() {
    let no_password = RelaySettings {
        password: None,
        ..valid()
    };
    assert_eq!(field_of(&no_password), "password");
    let empty_password = RelaySettings {
        password: Some(String::new()),
        ..valid()
    };
    assert_eq!(field_of(&empty_password), "password");
    let no_user = RelaySettings {
        user: None,
        ..valid()
    };
    assert_eq!(field_of(&no_user), "user");
    let neither = RelaySettings {
        user: Some(String::new()),
        password: None,
        ..valid()
    };
    neither.validate().unwrap();
    assert_eq!(neither.credentials(), None);
    assert_eq!(
        valid().credentials(),
        Some(("box@partner.fr", "s3cret-Pa55"))
    );
}

#[test]
fn debug_never_shows_the_password() {
    let shown = format!("{:?}", valid());
    assert!(!shown.contains("s3cret-Pa55"), "{shown}");
    assert!(shown.contains("<redacted>"));
    assert!(shown.contains("smtp.partner.fr"));
}

#[test]
fn serde_round_trip_with_lower_case_security() {
    let json = serde_json::to_value(valid()).unwrap();
    assert_eq!(json["security"], "starttls");
    let back: RelaySettings = serde_json::from_value(json).unwrap();
    assert_eq!(back, valid());
    for (text, security) in [
        ("starttls", Security::Starttls),
        ("tls", Security::Tls),
        ("none", Security::None),
    ] {
        let parsed: Security = serde_json::from_str(&format!("\"{text}\"")).unwrap();
        assert_eq!(parsed, security);
    }
    assert!(serde_json::from_str::<Security>("\"STARTTLS\"").is_err());
}

#[test]
fn unknown_fields_are_refused_and_credentials_optional() {
    let minimal = r#"{"host":"relay","port":25,"security":"none",
        "sender":"a@b.fr","recipients":[]}"#;
    let parsed: RelaySettings = serde_json::from_str(minimal).unwrap();
    assert_eq!(parsed.user, None);
    let extra = r#"{"host":"relay","port":25,"security":"none",
        "sender":"a@b.fr","recipients":[],"tls_verify":false}"#;
    let err = serde_json::from_str::<RelaySettings>(extra).unwrap_err();
    assert!(err.to_string().contains("tls_verify"), "{err}");
}

#[test]
fn relay_names_bracket_ipv6() {
    assert_eq!(valid().relay_name(), "smtp.partner.fr:587");
    let v6 = RelaySettings {
        host: "2001:db8::25".into(),
        ..valid()
    };
    assert_eq!(v6.relay_name(), "[2001:db8::25]:587");
}
