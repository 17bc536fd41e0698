//! Fixed newstyle negotiation: structured replies, metadata contexts, then `NBD_OPT_GO`
//! (falling back to `NBD_OPT_EXPORT_NAME` for servers without it). No TLS: the server is
//! expected on a local socket.

use crate::address::MAX_STRING;
use crate::conn::Wire;
use crate::error::{NbdError, server_text};
use crate::wire::*;

/// What the handshake settled.
#[derive(Debug)]
pub(crate) struct Negotiated {
    pub size: u64,
    pub flags: u16,
    pub block_sizes: BlockSizes,
    pub structured: bool,
    /// Granted metadata contexts: (id the server uses in replies, name).
    pub contexts: Vec<(u32, String)>,
}

/// Runs the handshake on a fresh connection, asking for `export` and `contexts`.
pub(crate) fn negotiate(
    wire: &mut Wire,
    export: &str,
    contexts: &[String],
) -> Result<Negotiated, NbdError> {
    let unsupported = |wire: &Wire, detail: &str| NbdError::Unsupported {
        target: wire.target.clone(),
        detail: detail.to_string(),
    };
    if wire.read_u64("reading the greeting")? != NBDMAGIC {
        return Err(unsupported(
            wire,
            "not an NBD server (no NBDMAGIC greeting)",
        ));
    }
    match wire.read_u64("reading the greeting")? {
        IHAVEOPT => {}
        OLDSTYLE_MAGIC => {
            return Err(unsupported(
                wire,
                "the server uses the oldstyle handshake, which has no export names",
            ));
        }
        other => return Err(wire.protocol(format!("unknown handshake magic {other:#x}"))),
    }
    let server_flags = wire.read_u16("reading the handshake flags")?;
    if server_flags & FLAG_FIXED_NEWSTYLE == 0 {
        return Err(unsupported(
            wire,
            "the server does not offer fixed newstyle negotiation",
        ));
    }
    let no_zeroes = server_flags & FLAG_NO_ZEROES != 0;
    let mut client_flags = CLIENT_FIXED_NEWSTYLE;
    if no_zeroes {
        client_flags |= CLIENT_NO_ZEROES;
    }
    wire.write_all(&client_flags.to_be_bytes(), "sending the client flags")?;

    let structured = negotiate_structured_replies(wire)?;
    let granted = if structured && !contexts.is_empty() {
        set_meta_contexts(wire, export, contexts)?
    } else {
        Vec::new()
    };
    let (size, flags, block_sizes) = match go(wire, export)? {
        Some(opened) => opened,
        None => export_name(wire, export, no_zeroes)?,
    };
    Ok(Negotiated {
        size,
        flags,
        block_sizes,
        structured,
        contexts: granted,
    })
}

/// One option reply: its type and data (bounded by [`MAX_OPTION_REPLY`]).
fn read_option_reply(wire: &mut Wire, option: u32) -> Result<(u32, Vec<u8>), NbdError> {
    const DURING: &str = "reading an option reply";
    let magic = wire.read_u64(DURING)?;
    if magic != OPTION_REPLY_MAGIC {
        return Err(wire.protocol(format!("option reply magic {magic:#x}")));
    }
    let answered = wire.read_u32(DURING)?;
    if answered != option {
        return Err(wire.protocol(format!(
            "reply to option {answered} while option {option} was asked"
        )));
    }
    let reply = wire.read_u32(DURING)?;
    let length = wire.read_u32(DURING)?;
    if length > MAX_OPTION_REPLY {
        return Err(wire.protocol(format!(
            "option reply of {length} bytes (limit {MAX_OPTION_REPLY})"
        )));
    }
    let data = wire.read_vec(length, DURING)?;
    Ok((reply, data))
}

fn refused(wire: &Wire, option: &'static str, reply: u32, data: &[u8]) -> NbdError {
    let mut message = server_text(data);
    if message.is_empty() && reply == 0x8000_0005 {
        message = "the server requires TLS, which this client does not speak".into();
    }
    NbdError::Refused {
        target: wire.target.clone(),
        option,
        reply: reply_name(reply),
        message,
    }
}

fn negotiate_structured_replies(wire: &mut Wire) -> Result<bool, NbdError> {
    wire.write_all(
        &option(OPT_STRUCTURED_REPLY, &[]),
        "asking for structured replies",
    )?;
    let (reply, data) = read_option_reply(wire, OPT_STRUCTURED_REPLY)?;
    match reply {
        REP_ACK if data.is_empty() => Ok(true),
        REP_ERR_SHUTDOWN => Err(refused(wire, "NBD_OPT_STRUCTURED_REPLY", reply, &data)),
        // Any other refusal: carry on with simple replies (reads still work).
        r if r & REP_ERR_BIT != 0 => Ok(false),
        other => Err(wire.protocol(format!(
            "{} ({} bytes) in answer to NBD_OPT_STRUCTURED_REPLY",
            reply_name(other),
            data.len()
        ))),
    }
}

/// Encodes a length-prefixed string of at most [`MAX_STRING`] bytes.
fn push_string(wire: &Wire, out: &mut Vec<u8>, what: &str, s: &str) -> Result<(), NbdError> {
    if s.len() > MAX_STRING || s.contains('\0') {
        return Err(NbdError::InvalidRequest {
            target: wire.target.clone(),
            detail: format!("{what} '{s}' is longer than {MAX_STRING} bytes or contains NUL"),
        });
    }
    // At most 4096, so it fits.
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn set_meta_contexts(
    wire: &mut Wire,
    export: &str,
    contexts: &[String],
) -> Result<Vec<(u32, String)>, NbdError> {
    if contexts.len() > 64 {
        return Err(NbdError::InvalidRequest {
            target: wire.target.clone(),
            detail: format!(
                "{} metadata contexts asked for (at most 64)",
                contexts.len()
            ),
        });
    }
    let mut data = Vec::new();
    push_string(wire, &mut data, "export name", export)?;
    data.extend_from_slice(&(contexts.len() as u32).to_be_bytes());
    for context in contexts {
        push_string(wire, &mut data, "metadata context", context)?;
    }
    wire.write_all(
        &option(OPT_SET_META_CONTEXT, &data),
        "asking for metadata contexts",
    )?;
    let mut granted: Vec<(u32, String)> = Vec::new();
    for _ in 0..MAX_OPTION_REPLIES {
        let (reply, data) = read_option_reply(wire, OPT_SET_META_CONTEXT)?;
        match reply {
            REP_META_CONTEXT => {
                let Some((id, name)) = data.split_first_chunk::<4>() else {
                    return Err(wire.protocol("metadata context reply shorter than 4 bytes"));
                };
                let id = u32::from_be_bytes(*id);
                let Ok(name) = String::from_utf8(name.to_vec()) else {
                    return Err(wire.protocol("metadata context name is not UTF-8"));
                };
                if granted.iter().any(|(seen, _)| *seen == id) {
                    return Err(wire.protocol(format!("metadata context id {id} given twice")));
                }
                granted.push((id, name));
            }
            REP_ACK => return Ok(granted),
            REP_ERR_SHUTDOWN => {
                return Err(refused(wire, "NBD_OPT_SET_META_CONTEXT", reply, &data));
            }
            // Refused (unsupported, too many...): no context is active, which block_status
            // reports when it is asked for one.
            r if r & REP_ERR_BIT != 0 => return Ok(Vec::new()),
            other => {
                return Err(wire.protocol(format!(
                    "{} in answer to NBD_OPT_SET_META_CONTEXT",
                    reply_name(other)
                )));
            }
        }
    }
    Err(wire.protocol(format!(
        "more than {MAX_OPTION_REPLIES} replies to NBD_OPT_SET_META_CONTEXT"
    )))
}

/// `NBD_OPT_GO` asking for block sizes. `None` if the server does not know the option.
fn go(wire: &mut Wire, export: &str) -> Result<Option<(u64, u16, BlockSizes)>, NbdError> {
    let mut data = Vec::new();
    push_string(wire, &mut data, "export name", export)?;
    data.extend_from_slice(&1u16.to_be_bytes());
    data.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    wire.write_all(&option(OPT_GO, &data), "opening the export")?;

    let mut export_info = None;
    let mut block_sizes = BlockSizes::DEFAULT;
    for _ in 0..MAX_OPTION_REPLIES {
        let (reply, data) = read_option_reply(wire, OPT_GO)?;
        match reply {
            REP_INFO => {
                let Some((kind, payload)) = data.split_first_chunk::<2>() else {
                    return Err(wire.protocol("information reply shorter than 2 bytes"));
                };
                match u16::from_be_bytes(*kind) {
                    INFO_EXPORT => {
                        export_info =
                            Some(parse_export_info(payload).map_err(|d| wire.protocol(d))?);
                    }
                    INFO_BLOCK_SIZE => {
                        block_sizes = parse_block_sizes(payload).map_err(|d| wire.protocol(d))?;
                    }
                    _ => {} // Names, descriptions, future types: not needed.
                }
            }
            REP_ACK => {
                let Some((size, flags)) = export_info else {
                    return Err(wire.protocol("NBD_OPT_GO succeeded without export information"));
                };
                return Ok(Some((size, flags, block_sizes)));
            }
            REP_ERR_UNSUP => return Ok(None),
            REP_ERR_UNKNOWN => {
                let mut err = refused(wire, "NBD_OPT_GO", reply, &data);
                if let NbdError::Refused { message, .. } = &mut err
                    && message.is_empty()
                {
                    *message = format!("no export named '{export}'");
                }
                return Err(err);
            }
            r if r & REP_ERR_BIT != 0 => return Err(refused(wire, "NBD_OPT_GO", r, &data)),
            other => {
                return Err(wire.protocol(format!("{} in answer to NBD_OPT_GO", reply_name(other))));
            }
        }
    }
    Err(wire.protocol(format!(
        "more than {MAX_OPTION_REPLIES} replies to NBD_OPT_GO"
    )))
}

/// The old way in: no error can come back, a refusing server just hangs up.
fn export_name(
    wire: &mut Wire,
    export: &str,
    no_zeroes: bool,
) -> Result<(u64, u16, BlockSizes), NbdError> {
    let mut data = Vec::new();
    push_string(wire, &mut data, "export name", export)?;
    // NBD_OPT_EXPORT_NAME carries the bare name, without the length prefix.
    wire.write_all(&option(OPT_EXPORT_NAME, &data[4..]), "opening the export")?;
    const DURING: &str = "opening the export (NBD_OPT_EXPORT_NAME)";
    let size = wire.read_u64(DURING)?;
    let flags = wire.read_u16(DURING)?;
    if !no_zeroes {
        wire.skip(124, DURING)?;
    }
    Ok((size, flags, BlockSizes::DEFAULT))
}

/// Ends a negotiation that will not reach transmission (best effort).
pub(crate) fn abort(wire: &mut Wire) {
    let _ = wire.write_all(&option(OPT_ABORT, &[]), "aborting the negotiation");
}
