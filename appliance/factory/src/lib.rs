//! Factory data of an Abri box.
//!
//! The factory (or the partner) writes one TOML file per box: the Argon2id hash of the box's
//! claim code and optional partner defaults. abrid reads it at every boot; it never holds the
//! claim code in clear. The format is documented in `docs/formats.md`.

pub mod code;
mod data;

pub use code::{ClaimCode, generate_readable_secret};
pub use data::{
    FACTORY_FORMAT_VERSION, FactoryData, FactoryError, Partner, SmtpRelay, SmtpSecurity,
};
