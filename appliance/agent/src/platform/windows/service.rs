//! The agent as a Windows service (`AbriAgent`, installed by the MSI, `abri-agent.exe
//! service`): the same loop as `abri-agent run`, started and stopped by the service manager.
//!
//! First start. The MSI writes the box URL, its CA fingerprint and the enrolment token
//! given on the msiexec command line to `HKLM\SOFTWARE\Abri\Agent` (`BoxUrl`, `Fingerprint`,
//! `EnrolToken`). When the machine is not enrolled yet, the service enrols with them (and
//! tries again every minute while the box cannot be reached), writes the configuration
//! (readable by SYSTEM and Administrators only) and deletes the token from the registry.
//!
//! Restart on failure. At each start the service sets its own recovery actions (restart
//! after 10 s, 1 min, 1 min; counter reset after a day; also when it stops with an error),
//! which the MSI's ServiceInstall cannot express.
//!
//! Its log goes to `C:\ProgramData\Abri\agent.log` (the service has no console).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
    ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod, ServiceState, ServiceStatus,
    ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use windows_service::{define_windows_service, service_dispatcher};
use windows_sys::Win32::System::Registry as reg;

use crate::config::AgentConfig;
use crate::enroll::{EnrollOptions, enroll};

/// The service's name (the MSI installs it under this name).
pub const SERVICE_NAME: &str = "AbriAgent";
/// Where the MSI leaves the enrolment data, under HKEY_LOCAL_MACHINE.
pub const ENROL_KEY: &str = r"SOFTWARE\Abri\Agent";
/// How long to wait between two enrolment attempts while the box cannot be reached.
const ENROL_RETRY: Duration = Duration::from_secs(60);

static CONFIG_PATH: OnceLock<PathBuf> = OnceLock::new();

define_windows_service!(ffi_service_main, service_main);

/// Hands the process to the service manager; returns when the service has stopped.
pub fn main(config: PathBuf) -> std::process::ExitCode {
    let _ = CONFIG_PATH.set(config);
    match service_dispatcher::start(SERVICE_NAME, ffi_service_main) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "abri-agent: cannot start as a Windows service ({e}); the service manager \
                 starts this command. To run in a console, use `abri-agent run`."
            );
            std::process::ExitCode::FAILURE
        }
    }
}

fn log_to_file(config: &Path) {
    let dir = config.parent().unwrap_or(Path::new(r"C:\ProgramData\Abri"));
    let _ = std::fs::create_dir_all(dir);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("agent.log"));
    if let Ok(file) = file {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::sync::Mutex::new(file))
            .with_ansi(false)
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .try_init();
    }
}

fn service_main(_args: Vec<OsString>) {
    let config = CONFIG_PATH
        .get()
        .cloned()
        .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_CONFIG_PATH));
    log_to_file(&config);
    // Errors are logged inside: once Stopped is reported the process may end at once.
    let _ = run_service(&config);
}

fn status(state: ServiceState, exit: u32) -> ServiceStatus {
    ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted: if state == ServiceState::Running {
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
        } else {
            ServiceControlAccept::empty()
        },
        exit_code: if exit == 0 {
            ServiceExitCode::Win32(0)
        } else {
            ServiceExitCode::ServiceSpecific(exit)
        },
        checkpoint: 0,
        wait_hint: Duration::from_secs(10),
        process_id: None,
    }
}

fn run_service(config_path: &Path) -> Result<(), String> {
    let stop = Arc::new(tokio::sync::Notify::new());
    let on_stop = stop.clone();
    let handle = service_control_handler::register(SERVICE_NAME, move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            on_stop.notify_one();
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    })
    .map_err(|e| format!("cannot register with the service manager: {e}"))?;
    let _ = handle.set_service_status(status(ServiceState::Running, 0));
    if let Err(e) = set_recovery_actions() {
        tracing::warn!("cannot set the service's restart-on-failure actions: {e}");
    }
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start: {e}"))
        .and_then(|rt| {
            rt.block_on(async {
                tokio::select! {
                    r = serve(config_path) => r,
                    _ = stop.notified() => {
                        tracing::info!("stopping at the service manager's request");
                        Ok(())
                    }
                }
            })
        });
    if let Err(e) = &result {
        tracing::error!("the service stops: {e}");
    }
    let exit = u32::from(result.is_err());
    let _ = handle.set_service_status(status(ServiceState::Stopped, exit));
    result
}

/// Enrols when needed, then carries out what the box asks until stopped.
async fn serve(config_path: &Path) -> Result<(), String> {
    let config = loop {
        match AgentConfig::load(config_path) {
            Ok(c) => {
                delete_enrolment_token();
                break c;
            }
            Err(e) => {
                let Some(data) = enrolment_data() else {
                    return Err(format!(
                        "{e}; and no enrolment data in HKLM\\{ENROL_KEY} (install the MSI with \
                         BOX_URL, FINGERPRINT and TOKEN)"
                    ));
                };
                let opts = EnrollOptions {
                    box_arg: data.box_url,
                    token: data.token,
                    fingerprint: Some(data.fingerprint),
                    config_path: config_path.to_path_buf(),
                    state_dir: None,
                    force: false,
                };
                match enroll(&opts).await {
                    Ok(done) => {
                        tracing::info!("enrolled as machine {}", done.machine_id);
                        delete_enrolment_token();
                    }
                    Err(e) => {
                        tracing::warn!(
                            "cannot enrol yet: {e}; trying again in {} s",
                            ENROL_RETRY.as_secs()
                        );
                        tokio::time::sleep(ENROL_RETRY).await;
                    }
                }
            }
        }
    };
    crate::service::run(config).await.map_err(|e| e.to_string())
}

fn set_recovery_actions() -> windows_service::Result<()> {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)?;
    let service = manager.open_service(SERVICE_NAME, ServiceAccess::CHANGE_CONFIG)?;
    let restart = |secs| ServiceAction {
        action_type: ServiceActionType::Restart,
        delay: Duration::from_secs(secs),
    };
    service.update_failure_actions(ServiceFailureActions {
        reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(24 * 3600)),
        reboot_msg: None,
        command: None,
        actions: Some(vec![restart(10), restart(60), restart(60)]),
    })?;
    service.set_failure_actions_on_non_crash_failures(true)
}

struct EnrolmentData {
    box_url: String,
    fingerprint: String,
    token: String,
}

fn enrolment_data() -> Option<EnrolmentData> {
    let get = |name: &str| registry_string(ENROL_KEY, name).filter(|v| !v.trim().is_empty());
    Some(EnrolmentData {
        box_url: get("BoxUrl")?,
        fingerprint: get("Fingerprint")?,
        token: get("EnrolToken")?,
    })
}

fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain([0]).collect()
}

/// A REG_SZ value under HKEY_LOCAL_MACHINE.
fn registry_string(key: &str, name: &str) -> Option<String> {
    let (k, n) = (wide(key), wide(name));
    let mut buf = vec![0u16; 2048];
    let mut len = (buf.len() * 2) as u32;
    // SAFETY: key and name are NUL-terminated; buf holds len bytes.
    let rc = unsafe {
        reg::RegGetValueW(
            reg::HKEY_LOCAL_MACHINE,
            k.as_ptr(),
            n.as_ptr(),
            reg::RRF_RT_REG_SZ,
            std::ptr::null_mut(),
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    let units = (len as usize / 2).min(buf.len());
    let text = &buf[..units];
    let end = text.iter().position(|&u| u == 0).unwrap_or(text.len());
    Some(String::from_utf16_lossy(&text[..end]))
}

/// The token is a secret: once used (or once the machine is enrolled) it leaves the registry.
fn delete_enrolment_token() {
    let (k, n) = (wide(ENROL_KEY), wide("EnrolToken"));
    // SAFETY: both strings are NUL-terminated.
    unsafe { reg::RegDeleteKeyValueW(reg::HKEY_LOCAL_MACHINE, k.as_ptr(), n.as_ptr()) };
}
