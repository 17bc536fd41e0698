//! `abri-provision discover`: list the boxes answering on this LAN.

use crate::discover::{FoundBox, Lan, Mdns};
use abri_proto::pin::display_fingerprint;
use anyhow::{Context, Result};
use clap::Args;
use std::fmt::Write;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct DiscoverArgs {
    /// How long to listen for boxes, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(1..=60))]
    pub timeout: u64,
}

pub async fn run(args: &DiscoverArgs) -> Result<Vec<FoundBox>> {
    let timeout = Duration::from_secs(args.timeout);
    let boxes = tokio::task::spawn_blocking(move || Mdns.browse(timeout, &mut |_| false))
        .await
        .context("the mDNS browse stopped unexpectedly")??;
    Ok(boxes)
}

pub fn render(boxes: &[FoundBox], timeout: u64) -> String {
    if boxes.is_empty() {
        return format!(
            "No Abri box answered on this network within {timeout} s. Check that the box is \
             powered on and plugged into this LAN, then try again (or use --timeout).\n"
        );
    }
    let mut text = String::new();
    for b in boxes {
        let state = if b.activated {
            "activated"
        } else {
            "new, waiting for activation"
        };
        let addresses: Vec<String> = b.addresses.iter().map(|a| a.to_string()).collect();
        let fingerprint = b
            .fingerprint
            .as_deref()
            .map(display_fingerprint)
            .unwrap_or_else(|| "(not advertised)".into());
        // Writing to a String cannot fail.
        let _ = write!(
            text,
            "{name}  ({state})\n\
             \x20 addresses:    {addresses}  port {port}\n\
             \x20 version:      {version}\n\
             \x20 fingerprint:  {fingerprint}\n\n",
            name = b.name,
            addresses = addresses.join(", "),
            port = b.port,
            version = b.version.as_deref().unwrap_or("?"),
        );
    }
    if let Some(new) = boxes.iter().find(|b| !b.activated) {
        let _ = writeln!(
            text,
            "Activate a new box with: abri-provision activate {} --claim-code CODE",
            new.name
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn renders_boxes_and_the_empty_network() {
        assert!(render(&[], 3).contains("No Abri box answered"));
        let b = FoundBox {
            name: "backup-abcd".into(),
            addresses: vec!["192.168.1.5".parse().unwrap()],
            port: 443,
            activated: false,
            fingerprint: Some("ab".repeat(32)),
            version: Some("0.1.0".into()),
            scope_ids: BTreeMap::new(),
        };
        let text = render(&[b], 3);
        assert!(text.contains("backup-abcd  (new"));
        assert!(text.contains("192.168.1.5  port 443"));
        assert!(text.contains("AB:AB:AB"));
        assert!(text.contains("activate backup-abcd --claim-code"));
    }
}
