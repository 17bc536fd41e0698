//! A plain-text mail as abrid composes it, and its conversion to a lettre message.

use lettre::message::Mailbox;
use lettre::message::header::ContentType;

use crate::MailError;
use crate::settings::{MAX_RECIPIENTS, check_address};

/// A plain-text UTF-8 mail; the sender comes from the relay settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub to: Vec<String>,
    pub subject: String,
    pub body: String,
}

impl Message {
    /// The message with its headers: From, To, Subject, Date, Message-ID, Content-Type.
    pub(crate) fn build(&self, sender: &str) -> Result<lettre::Message, MailError> {
        if self.to.is_empty() {
            return Err(MailError::InvalidMessage("no recipient".into()));
        }
        if self.to.len() > MAX_RECIPIENTS {
            return Err(MailError::InvalidMessage(format!(
                "{} recipients, at most {MAX_RECIPIENTS}",
                self.to.len()
            )));
        }
        let from = check_address("sender", sender).map_err(MailError::InvalidSettings)?;
        let mut builder = lettre::Message::builder()
            .from(Mailbox::new(None, from))
            .subject(one_line(&self.subject))
            .date_now()
            // None: lettre makes a unique id on this host's name.
            .message_id(None)
            .header(ContentType::TEXT_PLAIN);
        for recipient in &self.to {
            let address = recipient
                .parse()
                .map_err(
                    |err: lettre::address::AddressError| MailError::InvalidAddress {
                        address: recipient.chars().take(80).collect(),
                        reason: err.to_string(),
                    },
                )?;
            builder = builder.to(Mailbox::new(None, address));
        }
        builder
            .body(self.body.clone())
            .map_err(|err| MailError::InvalidMessage(err.to_string()))
    }
}

/// A subject is one header line: line breaks in it become spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message {
        Message {
            to: vec!["alerts@partner.fr".into(), "it@customer.fr".into()],
            subject: "Sauvegarde échouée\r\nBcc: evil@x.fr".into(),
            body: "La sauvegarde de pc-01 a échoué.\n".into(),
        }
    }

    #[test]
    fn builds_all_headers() {
        let built = message().build("backup-abcd@partner.fr").unwrap();
        let text = String::from_utf8(built.formatted()).unwrap();
        assert!(text.contains("From: backup-abcd@partner.fr\r\n"), "{text}");
        assert!(
            text.contains("To: alerts@partner.fr, it@customer.fr\r\n"),
            "{text}"
        );
        assert!(text.contains("Date: "), "{text}");
        assert!(text.contains("Message-ID: <"), "{text}");
        assert!(
            text.contains("Content-Type: text/plain; charset=utf-8"),
            "{text}"
        );
        assert!(!text.contains("\r\nBcc:"), "no header injection: {text}");
        let envelope = built.envelope();
        assert_eq!(envelope.to().len(), 2);
        assert_eq!(
            envelope.from().unwrap().to_string(),
            "backup-abcd@partner.fr"
        );
    }

    #[test]
    fn refuses_bad_recipients() {
        let none = Message {
            to: vec![],
            ..message()
        };
        assert!(matches!(
            none.build("a@b.fr"),
            Err(MailError::InvalidMessage(_))
        ));
        let bad = Message {
            to: vec!["ok@b.fr".into(), "not-an-address".into()],
            ..message()
        };
        let err = bad.build("a@b.fr").unwrap_err();
        assert!(err.to_string().contains("'not-an-address'"), "{err}");
        let many = Message {
            to: (0..=MAX_RECIPIENTS).map(|i| format!("r{i}@b.fr")).collect(),
            ..message()
        };
        assert!(matches!(
            many.build("a@b.fr"),
            Err(MailError::InvalidMessage(_))
        ));
    }
}
