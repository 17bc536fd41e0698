//! The byte stream to the server: opening it, and reads and writes whose failures become
//! [`NbdError`]s naming the export and what the client was doing.

use std::io::{self, BufReader, ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::address::{Address, Endpoint};
use crate::error::NbdError;

/// A connected stream: a socket, or an in-memory script in tests.
pub(crate) trait Transport: Read + Write + Send {}
impl<T: Read + Write + Send> Transport for T {}

/// The connection, buffered for reading (headers are small), writing straight through.
pub(crate) struct Wire {
    stream: BufReader<Box<dyn Transport>>,
    /// The export's URI, for messages.
    pub target: String,
}

impl Wire {
    pub(crate) fn new(stream: Box<dyn Transport>, target: String) -> Wire {
        Wire {
            stream: BufReader::with_capacity(64 * 1024, stream),
            target,
        }
    }

    /// Opens the socket named by `address`, with `timeout` on every read and write (and
    /// on the TCP connect).
    pub(crate) fn open(address: &Address, timeout: Option<Duration>) -> Result<Wire, NbdError> {
        let target = address.to_string();
        let connect_error = |source| NbdError::Connect {
            target: target.clone(),
            source,
        };
        let stream: Box<dyn Transport> = match &address.endpoint {
            Endpoint::Unix(path) => {
                let socket = UnixStream::connect(path).map_err(connect_error)?;
                socket.set_read_timeout(timeout).map_err(connect_error)?;
                socket.set_write_timeout(timeout).map_err(connect_error)?;
                Box::new(socket)
            }
            Endpoint::Tcp { host, port } => {
                let socket = connect_tcp(host, *port, timeout).map_err(connect_error)?;
                socket.set_read_timeout(timeout).map_err(connect_error)?;
                socket.set_write_timeout(timeout).map_err(connect_error)?;
                // Requests are small and several may be in flight: send each at once.
                socket.set_nodelay(true).map_err(connect_error)?;
                Box::new(socket)
            }
        };
        Ok(Wire::new(stream, target))
    }

    fn io_error(&self, during: &'static str, source: io::Error) -> NbdError {
        match source.kind() {
            ErrorKind::UnexpectedEof => NbdError::ServerClosed {
                target: self.target.clone(),
                during,
            },
            // What a socket timeout looks like on Unix; say it plainly.
            ErrorKind::WouldBlock | ErrorKind::TimedOut => NbdError::Io {
                target: self.target.clone(),
                during,
                source: io::Error::new(
                    ErrorKind::TimedOut,
                    "the server did not answer within the I/O timeout",
                ),
            },
            _ => NbdError::Io {
                target: self.target.clone(),
                during,
                source,
            },
        }
    }

    pub(crate) fn protocol(&self, detail: impl Into<String>) -> NbdError {
        NbdError::Protocol {
            target: self.target.clone(),
            detail: detail.into(),
        }
    }

    pub(crate) fn read_exact(
        &mut self,
        buf: &mut [u8],
        during: &'static str,
    ) -> Result<(), NbdError> {
        self.stream
            .read_exact(buf)
            .map_err(|e| self.io_error(during, e))
    }

    pub(crate) fn read_array<const N: usize>(
        &mut self,
        during: &'static str,
    ) -> Result<[u8; N], NbdError> {
        let mut out = [0u8; N];
        self.read_exact(&mut out, during)?;
        Ok(out)
    }

    pub(crate) fn read_u16(&mut self, during: &'static str) -> Result<u16, NbdError> {
        self.read_array(during).map(u16::from_be_bytes)
    }

    pub(crate) fn read_u32(&mut self, during: &'static str) -> Result<u32, NbdError> {
        self.read_array(during).map(u32::from_be_bytes)
    }

    pub(crate) fn read_u64(&mut self, during: &'static str) -> Result<u64, NbdError> {
        self.read_array(during).map(u64::from_be_bytes)
    }

    /// Reads a payload of `length` bytes that the caller has already bounded.
    pub(crate) fn read_vec(
        &mut self,
        length: u32,
        during: &'static str,
    ) -> Result<Vec<u8>, NbdError> {
        let mut out = vec![0u8; length as usize];
        self.read_exact(&mut out, during)?;
        Ok(out)
    }

    /// Reads and drops `length` bytes without holding them.
    pub(crate) fn skip(&mut self, length: u64, during: &'static str) -> Result<(), NbdError> {
        let copied = io::copy(&mut (&mut self.stream).take(length), &mut io::sink())
            .map_err(|e| self.io_error(during, e))?;
        if copied < length {
            return Err(self.io_error(during, ErrorKind::UnexpectedEof.into()));
        }
        Ok(())
    }

    pub(crate) fn write_all(&mut self, bytes: &[u8], during: &'static str) -> Result<(), NbdError> {
        let stream = self.stream.get_mut();
        let result = stream.write_all(bytes).and_then(|()| stream.flush());
        result.map_err(|e| self.io_error(during, e))
    }

    /// After a disconnect request: waits (within the socket's timeout) for the server to
    /// close, reading at most 64 KiB of anything it still sends.
    pub(crate) fn wait_closed(&mut self) -> Result<(), NbdError> {
        let mut limited = (&mut self.stream).take(64 * 1024);
        io::copy(&mut limited, &mut io::sink())
            .map(|_| ())
            .map_err(|e| self.io_error("waiting for the server to close", e))
    }
}

fn connect_tcp(host: &str, port: u16, timeout: Option<Duration>) -> io::Result<TcpStream> {
    let mut last = io::Error::new(ErrorKind::NotFound, format!("no address found for {host}"));
    for addr in (host, port).to_socket_addrs()? {
        let attempt = match timeout {
            Some(t) => TcpStream::connect_timeout(&addr, t),
            None => TcpStream::connect(addr),
        };
        match attempt {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}
