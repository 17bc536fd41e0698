//! `abri-provision status`: what a box says about itself (`GET /api/v1/status`), over the
//! same pinned connection as activation.

use crate::client::BoxClient;
use crate::resolve::{BoxArgs, Endpoint};
use abri_proto::api::Status;
use abri_proto::pin::display_fingerprint;
use anyhow::{Context, Result};

pub async fn run(args: &BoxArgs) -> Result<(Endpoint, Status)> {
    let endpoint = args.resolve().await?;
    let status = BoxClient::new(&endpoint)?
        .status()
        .await
        .with_context(|| format!("cannot read the status of box {}", endpoint.label))?;
    Ok((endpoint, status))
}

pub fn render(endpoint: &Endpoint, s: &Status) -> String {
    let state = if s.activated {
        "activated"
    } else {
        "new, waiting for activation"
    };
    format!(
        "Box {name}\n\
         \x20 state:        {state}\n\
         \x20 fqdn:         {fqdn}\n\
         \x20 version:      {version}\n\
         \x20 fingerprint:  {fp}\n\
         \x20 console:      {console}\n",
        name = s.hostname,
        fqdn = s.fqdn.as_deref().unwrap_or("-"),
        version = s.version,
        fp = display_fingerprint(&s.fingerprint),
        console = endpoint.console_url(),
    )
}
