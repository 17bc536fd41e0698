//! A server that hangs up mid-reply or falls silent, over a real Unix socket: a minimal
//! hand-written server (qemu-nbd cannot be made to do this on purpose) that negotiates
//! properly, then sends part of a reply and closes, or nothing at all.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread;

use abri_nbd::{Address, NbdError};
use common::*;

fn u32_at(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

fn option_reply(s: &mut UnixStream, option: u32, reply: u32, data: &[u8]) {
    let mut out = 0x0003_e889_0455_65a9u64.to_be_bytes().to_vec();
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&reply.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    s.write_all(&out).unwrap();
}

/// Reads one option from the client; returns its number.
fn read_option(s: &mut UnixStream) -> u32 {
    let mut header = [0u8; 16];
    s.read_exact(&mut header).unwrap();
    let mut data = vec![0u8; u32_at(&header[12..]) as usize];
    s.read_exact(&mut data).unwrap();
    u32_at(&header[8..])
}

/// Negotiates an 8 MiB export with structured replies, then hands over to `then` with the
/// first request's handle.
fn serve(
    listener: UnixListener,
    then: impl FnOnce(&mut UnixStream, u64) + Send + 'static,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut greeting = b"NBDMAGICIHAVEOPT".to_vec();
        greeting.extend_from_slice(&3u16.to_be_bytes()); // Fixed newstyle, no zeroes.
        s.write_all(&greeting).unwrap();
        let mut flags = [0u8; 4];
        s.read_exact(&mut flags).unwrap();
        loop {
            match read_option(&mut s) {
                8 => option_reply(&mut s, 8, 1, &[]), // Structured replies: yes.
                7 => {
                    let mut info = 0u16.to_be_bytes().to_vec();
                    info.extend_from_slice(&(8u64 << 20).to_be_bytes());
                    info.extend_from_slice(&1u16.to_be_bytes());
                    option_reply(&mut s, 7, 3, &info);
                    option_reply(&mut s, 7, 1, &[]);
                    break;
                }
                other => option_reply(&mut s, other, 0x8000_0001, &[]),
            }
        }
        let mut request = [0u8; 28];
        s.read_exact(&mut request).unwrap();
        let handle = u64::from_be_bytes(request[8..16].try_into().unwrap());
        then(&mut s, handle);
        // Half-close, then wait for the client to close its side (so no RST).
        let _ = s.shutdown(Shutdown::Write);
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    })
}

fn structured_chunk(handle: u64, kind: u16, payload_len: u32) -> Vec<u8> {
    let mut out = 0x668e_33efu32.to_be_bytes().to_vec();
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&handle.to_be_bytes());
    out.extend_from_slice(&payload_len.to_be_bytes());
    out
}

fn read_fails_with(then: impl FnOnce(&mut UnixStream, u64) + Send + 'static) -> NbdError {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("fake.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let server = serve(listener, then);
    let mut client = connect_to(&Address::unix(&socket, "disk"), &[]).unwrap();
    assert_eq!(client.size(), 8 << 20);
    let mut buf = vec![0u8; 64 * 1024];
    let err = client.read_at(0, &mut buf).unwrap_err();
    // The connection is now unusable, and says so.
    let again = client.read_at(0, &mut buf).unwrap_err();
    assert!(matches!(again, NbdError::Broken { .. }), "{again}");
    drop(client);
    server.join().unwrap();
    err
}

#[test]
fn server_closing_inside_a_data_chunk() {
    let err = read_fails_with(|s, handle| {
        // Announce 64 KiB of data, send 1000 bytes of it, hang up.
        let mut out = structured_chunk(handle, 1, 8 + 64 * 1024);
        out.extend_from_slice(&0u64.to_be_bytes());
        out.extend_from_slice(&[7u8; 1000]);
        s.write_all(&out).unwrap();
    });
    assert!(matches!(err, NbdError::ServerClosed { .. }), "{err}");
    assert!(err.to_string().contains("fake.sock"), "{err}");
}

#[test]
fn server_closing_inside_a_chunk_header() {
    let err = read_fails_with(|s, handle| {
        s.write_all(&structured_chunk(handle, 1, 8 + 64 * 1024)[..10])
            .unwrap();
    });
    assert!(matches!(err, NbdError::ServerClosed { .. }), "{err}");
}

#[test]
fn server_closing_before_the_last_chunk() {
    let err = read_fails_with(|s, handle| {
        // A complete hole chunk for half the read, without the DONE flag, then nothing.
        let mut out = structured_chunk(handle, 2, 12);
        out.extend_from_slice(&0u64.to_be_bytes());
        out.extend_from_slice(&(32u32 * 1024).to_be_bytes());
        s.write_all(&out).unwrap();
    });
    assert!(matches!(err, NbdError::ServerClosed { .. }), "{err}");
}

#[test]
fn a_silent_server_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("silent.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    // Negotiates, takes the read request, then says nothing until the client leaves.
    let server = serve(listener, |s, _| {
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    });
    let options = abri_nbd::ConnectOptions {
        io_timeout: Some(std::time::Duration::from_millis(300)),
        ..options(&[])
    };
    let mut client =
        abri_nbd::Client::connect_with(&Address::unix(&socket, "disk"), &options).unwrap();
    let mut buf = [0u8; 512];
    let err = client.read_at(0, &mut buf).unwrap_err();
    assert!(matches!(err, NbdError::Io { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("did not answer within the I/O timeout"),
        "{err}"
    );
    drop(client);
    server.join().unwrap();
}

#[test]
fn clients_can_move_to_worker_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<abri_nbd::Client>();
    assert_send::<NbdError>();
}
