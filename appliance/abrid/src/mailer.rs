//! The mail the box sends: the activation mail to the partner and the test mail.
//! Sending itself is `abri_mail`; this module knows which relay and what to say.

use crate::app::App;
use crate::state::Table;
use abri_mail::{Message, RelaySettings, Security};

/// The relay the console configured, if any.
pub fn configured_relay(app: &App) -> Option<RelaySettings> {
    app.db
        .get::<RelaySettings>(Table::Config, "mail")
        .ok()
        .flatten()
}

/// The relay of the factory data, addressed to the partner; used until the console sets one.
pub fn relay_from_factory(factory: &abri_factory::FactoryData) -> Option<RelaySettings> {
    let smtp = factory.smtp.as_ref()?;
    Some(RelaySettings {
        host: smtp.host.clone(),
        port: smtp.port,
        security: match smtp.security {
            abri_factory::SmtpSecurity::Starttls => Security::Starttls,
            abri_factory::SmtpSecurity::Tls => Security::Tls,
            abri_factory::SmtpSecurity::None => Security::None,
        },
        user: smtp.user.clone(),
        password: smtp.password.clone(),
        sender: smtp.sender.clone(),
        recipients: factory.partner.email.iter().cloned().collect(),
    })
}

fn console_urls(app: &App) -> String {
    let mut urls = vec![format!("https://{}.local", app.identity.hostname)];
    urls.extend(app.identity.fqdn.iter().map(|f| format!("https://{f}")));
    urls.join("\n  ")
}

/// Mails the freshly issued admin password to the partner when a relay and an address are
/// known. Returns whether it was sent; a failure is logged (without the password) and does
/// not undo the activation: the activator has the password on screen.
pub async fn mail_password_to_partner(app: &App, password: &str) -> bool {
    let Some(email) = app.factory.partner.email.clone() else {
        return false;
    };
    let Some(relay) = configured_relay(app).or_else(|| relay_from_factory(&app.factory)) else {
        return false;
    };
    let fr = app.default_language() == "fr";
    let host = &app.identity.hostname;
    let (subject, body) = if fr {
        (
            format!("Boîtier Abri {host} activé"),
            format!(
                "Le boîtier de sauvegarde {host} vient d'être activé.\n\nConsole :\n  {}\nEmpreinte de son autorité de certification (SHA-256) :\n  {}\n\nUtilisateur : admin\nMot de passe : {password}\n\nChangez ce mot de passe après la première connexion.\n",
                console_urls(app),
                abri_proto::pin::display_fingerprint(app.ca.fingerprint()),
            ),
        )
    } else {
        (
            format!("Abri box {host} activated"),
            format!(
                "The backup box {host} has just been activated.\n\nConsole:\n  {}\nFingerprint of its certificate authority (SHA-256):\n  {}\n\nUser: admin\nPassword: {password}\n\nChange this password after the first login.\n",
                console_urls(app),
                abri_proto::pin::display_fingerprint(app.ca.fingerprint()),
            ),
        )
    };
    let message = Message {
        to: vec![email],
        subject,
        body,
    };
    match abri_mail::send(&relay, &message).await {
        Ok(()) => {
            tracing::info!(relay = %relay.host, "mailed the activation to the partner");
            true
        }
        Err(e) => {
            tracing::warn!(relay = %relay.host, "could not mail the activation to the partner: {e}");
            false
        }
    }
}

/// The test mail of the mail settings page.
pub fn test_message(app: &App, to: Vec<String>, language: &str) -> Message {
    let host = &app.identity.hostname;
    let (subject, body) = if language == "fr" {
        (
            format!("Test d'envoi du boîtier Abri {host}"),
            format!(
                "Ce message de test a été envoyé par le boîtier de sauvegarde {host}.\nLe relais de messagerie fonctionne.\n\nConsole :\n  {}\n",
                console_urls(app)
            ),
        )
    } else {
        (
            format!("Test mail from Abri box {host}"),
            format!(
                "This test mail was sent by the backup box {host}.\nThe mail relay works.\n\nConsole:\n  {}\n",
                console_urls(app)
            ),
        )
    };
    Message { to, subject, body }
}
