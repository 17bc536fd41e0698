//! `abri-provision activate`: claim a new box with the code on its label and show the
//! generated admin password, once.
//!
//! The box's status is read first: an already activated box is reported as such without
//! spending a claim-code attempt (failed attempts count towards the box's throttling).

use crate::client::{BoxClient, ClientError};
use crate::resolve::BoxArgs;
use abri_factory::ClaimCode;
use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

#[derive(Args)]
pub struct ActivateArgs {
    #[command(flatten)]
    pub target: BoxArgs,
    /// The claim code on the box's label (case, spaces and dashes do not matter). Setting
    /// ABRI_CLAIM_CODE instead keeps it out of the process list.
    #[arg(
        long,
        value_name = "CODE",
        env = "ABRI_CLAIM_CODE",
        hide_env_values = true
    )]
    pub claim_code: String,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "this is not a claim code: a claim code is 16 letters and digits in four groups, such as \
     abcd-efgh-jkmn-pqrs, without 0, 1, l or o; check the label on the box"
)]
pub struct MistypedClaimCode;

/// The result of an activation. No `Debug`: it holds the password.
#[derive(Serialize)]
pub struct Activation {
    #[serde(rename = "box")]
    pub box_name: String,
    pub user: String,
    pub password: String,
    pub mailed_to_partner: bool,
    pub console: String,
}

pub async fn run(args: &ActivateArgs) -> Result<Activation> {
    let code = ClaimCode::parse(&args.claim_code).ok_or(MistypedClaimCode)?;
    let endpoint = args.target.resolve().await?;
    let client = BoxClient::new(&endpoint)?;
    let status = client
        .status()
        .await
        .with_context(|| format!("cannot read the status of box {}", endpoint.label))?;
    if status.activated {
        return Err(ClientError::AlreadyActivated)
            .with_context(|| format!("box {} cannot be activated", status.hostname));
    }
    let issued = client
        .activate(&code)
        .await
        .with_context(|| format!("activation of box {} failed", status.hostname))?;
    Ok(Activation {
        box_name: status.hostname,
        user: issued.user,
        password: issued.password,
        mailed_to_partner: issued.mailed_to_partner,
        console: endpoint.console_url(),
    })
}

pub fn render(a: &Activation) -> String {
    let mailed = if a.mailed_to_partner {
        "It was also mailed to the partner."
    } else {
        "It was NOT mailed (the box knows no mail relay or partner address): hand it over yourself."
    };
    format!(
        "Box {name} is activated.\n\
         \n\
         \x20 Console:   {console}\n\
         \x20 User:      {user}\n\
         \x20 Password:  {password}\n\
         \n\
         WRITE THE PASSWORD DOWN NOW: it is shown only this once and the box keeps no copy in clear.\n\
         {mailed}\n",
        name = a.box_name,
        console = a.console,
        user = a.user,
        password = a.password,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_shows_the_password_once_with_the_warning() {
        let a = Activation {
            box_name: "backup-abcd".into(),
            user: "admin".into(),
            password: "pw-1234-5678".into(),
            mailed_to_partner: false,
            console: "https://backup-abcd.local".into(),
        };
        let text = render(&a);
        assert_eq!(text.matches("pw-1234-5678").count(), 1);
        assert!(text.contains("WRITE THE PASSWORD DOWN"));
        assert!(text.contains("NOT mailed"));
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["box"], "backup-abcd");
        assert_eq!(json["user"], "admin");
        assert_eq!(json["password"], "pw-1234-5678");
        assert_eq!(json["mailed_to_partner"], false);
    }
}
