//! Agent installers the console hands out.
//!
//! The box carries the generic Windows installer (`abri-agent.msi`, built by
//! `make windows-agent`) in its installers directory (`--installers`). For a technician it
//! makes a *kit*: a copy whose `Property` table holds the box's address, its CA fingerprint
//! and a valid enrolment token, so that `msiexec /i kit.msi /qn` is the whole installation.
//! The copy gets a package code of its own (the summary's revision number), as Windows
//! Installer expects of any two packages whose contents differ. Nothing else changes: the
//! program, the service definition and the embedded cabinet are the generic installer's.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use crate::app::App;
use crate::errors::{AppError, AppResult};

/// File name of the generic Windows installer inside the installers directory.
pub const WINDOWS_MSI: &str = "abri-agent.msi";

/// Where the firmware image puts the installers.
pub const DEFAULT_DIR: &str = "/usr/share/abri/installers";

/// Largest generic installer the box reads (the release MSI is a few MB).
const MAX_MSI_BYTES: u64 = 256 << 20;

/// Properties a kit sets; the MSI writes them to `HKLM\SOFTWARE\Abri\Agent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KitValues {
    pub box_url: String,
    pub fingerprint: String,
    pub token: String,
}

/// The generic Windows installer's path, when this box carries one.
pub fn windows_msi(dir: &Path) -> Option<PathBuf> {
    let path = dir.join(WINDOWS_MSI);
    path.is_file().then_some(path)
}

/// Checks the address agents will use to reach the box: `https://HOST[:PORT]`, where HOST is
/// a name or an address; anything else is refused (it ends up in a registry value and in the
/// agent's configuration).
pub fn check_box_url(url: &str) -> AppResult<String> {
    let invalid = || {
        AppError::Invalid(format!(
            "box_url {url:?}: expected https://NAME or https://ADDRESS, with an optional :PORT"
        ))
    };
    let rest = url.trim().strip_prefix("https://").ok_or_else(invalid)?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let host_ok = !rest.is_empty()
        && rest.len() <= 260
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c));
    if !host_ok || rest.starts_with(':') {
        return Err(invalid());
    }
    Ok(format!("https://{rest}"))
}

/// Makes a kit from the generic installer at `generic`.
pub fn make_kit(generic: &Path, values: &KitValues) -> AppResult<Vec<u8>> {
    let size = std::fs::metadata(generic)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("{}: {e}", generic.display())))?
        .len();
    if size > MAX_MSI_BYTES {
        return Err(AppError::Internal(anyhow::anyhow!(
            "{}: {size} bytes, more than an agent installer can be",
            generic.display()
        )));
    }
    let bytes = std::fs::read(generic)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("{}: {e}", generic.display())))?;
    set_properties(
        bytes,
        &[
            ("BOX_URL", &values.box_url),
            ("FINGERPRINT", &values.fingerprint),
            ("TOKEN", &values.token),
        ],
        uuid::Uuid::new_v4(),
    )
    .map_err(|e| {
        AppError::Internal(anyhow::anyhow!(
            "{}: cannot make an installer kit: {e}",
            generic.display()
        ))
    })
}

/// Sets `properties` in an MSI held in memory (replacing rows with the same names) and gives
/// it `package_code`.
pub fn set_properties(
    msi_bytes: Vec<u8>,
    properties: &[(&str, &str)],
    package_code: uuid::Uuid,
) -> std::io::Result<Vec<u8>> {
    let mut package = msi::Package::open(Cursor::new(msi_bytes))?;
    if !package.has_table("Property") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the package has no Property table",
        ));
    }
    for (name, value) in properties {
        package.delete_rows(
            msi::Delete::from("Property")
                .with(msi::Expr::col("Property").eq(msi::Expr::string(*name))),
        )?;
        package.insert_rows(
            msi::Insert::into("Property")
                .row(vec![msi::Value::from(*name), msi::Value::from(*value)]),
        )?;
    }
    package.summary_info_mut().set_uuid(package_code);
    package.flush()?;
    Ok(package.into_inner()?.into_inner())
}

/// The kit for `token` (checked: known, not expired, not revoked), reaching the box at
/// `box_url`.
pub fn windows_kit(app: &App, token: &str, box_url: &str) -> AppResult<Vec<u8>> {
    let box_url = check_box_url(box_url)?;
    crate::machines::check_enrol_token(app, token)?;
    let generic = windows_msi(&app.installers_dir).ok_or_else(|| {
        AppError::NotFound(format!(
            "the Windows installer ({})",
            app.installers_dir.join(WINDOWS_MSI).display()
        ))
    })?;
    make_kit(
        &generic,
        &KitValues {
            box_url,
            fingerprint: app.ca.fingerprint().to_string(),
            token: token.trim().to_string(),
        },
    )
}

/// The address agents use by default: the box's mDNS name.
pub fn default_box_url(app: &App) -> String {
    format!("https://{}.local", app.identity.hostname)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn property_rows(bytes: Vec<u8>) -> Vec<(String, String)> {
        let mut package = msi::Package::open(Cursor::new(bytes)).expect("open");
        package
            .select_rows(msi::Select::table("Property"))
            .expect("select")
            .map(|row| {
                (
                    row[0].as_str().unwrap_or_default().to_string(),
                    row[1].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// A small package with a Property table, made by the msi crate itself (the tests in
    /// tests/windows use wixl's real installer).
    fn sample_package() -> Vec<u8> {
        let mut package =
            msi::Package::create(msi::PackageType::Installer, Cursor::new(Vec::new()))
                .expect("create");
        package
            .create_table(
                "Property",
                vec![
                    msi::Column::build("Property").primary_key().id_string(72),
                    msi::Column::build("Value").nullable().formatted_string(0),
                ],
            )
            .expect("table");
        package
            .insert_rows(msi::Insert::into("Property").rows(vec![
                vec![
                    msi::Value::from("ProductName"),
                    msi::Value::from("Abri agent"),
                ],
                vec![msi::Value::from("TOKEN"), msi::Value::from("old")],
            ]))
            .expect("rows");
        package.flush().expect("flush");
        package.into_inner().expect("inner").into_inner()
    }

    #[test]
    fn properties_are_set_and_replaced_and_the_package_code_changes() {
        let code = uuid::Uuid::from_u128(0x1234_5678_9abc_4def_8123_4567_89ab_cdef);
        let out = set_properties(
            sample_package(),
            &[
                ("BOX_URL", "https://backup-abcd.local"),
                ("TOKEN", "id.secret"),
            ],
            code,
        )
        .expect("set");
        let mut rows = property_rows(out.clone());
        rows.sort();
        assert_eq!(
            rows,
            vec![
                ("BOX_URL".into(), "https://backup-abcd.local".into()),
                ("ProductName".into(), "Abri agent".into()),
                ("TOKEN".into(), "id.secret".into()),
            ]
        );
        let package = msi::Package::open(Cursor::new(out)).expect("reopen");
        assert_eq!(package.summary_info().uuid(), Some(code));
    }

    #[test]
    fn a_file_that_is_no_installer_is_refused() {
        let err = set_properties(b"not an msi".to_vec(), &[("TOKEN", "x")], uuid::Uuid::nil());
        assert!(err.is_err());
    }

    #[test]
    fn box_urls_are_checked() {
        assert_eq!(
            check_box_url("https://backup-abcd.local/").expect("name"),
            "https://backup-abcd.local"
        );
        assert!(check_box_url("https://127.0.0.1:8443").is_ok());
        assert!(check_box_url("https://[fd00::1]:443").is_ok());
        for bad in [
            "http://backup-abcd.local",
            "https://",
            "https://a b",
            "https://x/path",
            "https://x\"y",
            "https://:443",
            "backup-abcd.local",
        ] {
            assert!(check_box_url(bad).is_err(), "{bad}");
        }
    }
}
